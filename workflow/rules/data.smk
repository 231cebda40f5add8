localrules:
    download_archive,
    unpack_archive,


rule demo_atlas:
    output:
        images=directory("resources/demo_atlas/images"),
        annotations=directory("resources/demo_atlas/annotations"),
        truth="resources/demo_atlas/truth.csv",
    log:
        "logs/demo_atlas/demo_atlas.log",
    benchmark:
        "benchmarks/demo_atlas/demo_atlas.tsv"
    conda:
        "../../envs/data.yaml"
    params:
        demo=config["data"].get("demo"),
    script:
        "../scripts/demo_atlas.py"


rule download_archive:
    output:
        f"{ARCHIVE_DIR}/{{filename}}",
    log:
        "logs/download_archive/{filename}.log",
    conda:
        "../../envs/data.yaml"
    params:
        spec=archive_spec_by_filename,
        landing_page=csxa_setting("landing_page"),
        download=csxa_setting("download"),
    script:
        "../scripts/download_archive.py"


rule unpack_archive:
    input:
        archive_path,
    output:
        directory("resources/csxa/unpacked/{archive}"),
    log:
        "logs/unpack_archive/{archive}.log",
    conda:
        "../../envs/data.yaml"
    params:
        spec=archive_spec,
        landing_page=csxa_setting("landing_page"),
        download=csxa_setting("download"),
    script:
        "../scripts/unpack_archive.py"
