localrules:
    download_archive,
    unpack_archive,


rule demo_atlas:
    output:
        images=directory("resources/demo_atlas/images"),
        annotations=directory("resources/demo_atlas/annotations"),
        metadata="resources/demo_atlas/metadata.csv",
        truth="resources/demo_atlas/truth.csv",
    log:
        "logs/demo_atlas/demo_atlas.log",
    benchmark:
        "benchmarks/demo_atlas/demo_atlas.tsv"
    conda:
        "../../envs/data.yaml"
    params:
        demo=canonical(config["data"].get("demo")),
    script:
        "../scripts/demo_atlas.py"


rule download_archive:
    output:
        f"{ARCHIVE_DIR}/{{filename}}",
    log:
        "logs/download_archive/{filename}.log",
    benchmark:
        "benchmarks/download_archive/{filename}.tsv"
    conda:
        "../../envs/data.yaml"
    params:
        # What the file is; how to fetch it (time-outs, retries) changes nothing and is read at run time.
        spec=archive_spec_by_filename,
    script:
        "../scripts/download_archive.py"


rule unpack_archive:
    input:
        archive_path,
    output:
        directory("resources/csxa/unpacked/{archive}"),
    log:
        "logs/unpack_archive/{archive}.log",
    benchmark:
        "benchmarks/unpack_archive/{archive}.tsv"
    conda:
        "../../envs/data.yaml"
    params:
        spec=archive_spec,
    script:
        "../scripts/unpack_archive.py"


rule preprocess:
    input:
        unpack(raw_atlas_dirs),
    output:
        atlas=ATLAS_H5,
        rejects=REJECTS_CSV,
    log:
        "logs/preprocess/preprocess.log",
    benchmark:
        "benchmarks/preprocess/preprocess.tsv"
    conda:
        "../../envs/data.yaml"
    params:
        # The rejection limit only decides whether the job fails, so it is read at run time.
        settings=pick(config["preprocess"], "size", "resize_mode", "negative_detection"),
    script:
        "../scripts/preprocess.py"


rule preprocess_qc:
    input:
        atlas=ATLAS_H5,
    output:
        report(
            QC_FIGURE, caption="../report/preprocess_qc.rst", category="Preprocessing"
        ),
    log:
        "logs/preprocess_qc/preprocess_qc.log",
    benchmark:
        "benchmarks/preprocess_qc/preprocess_qc.tsv"
    conda:
        "../../envs/data.yaml"
    params:
        qc=canonical(config["preprocess"]["qc"]),
    script:
        "../scripts/preprocess_qc.py"


rule split_manifest:
    input:
        atlas=ATLAS_H5,
    output:
        SPLIT_MANIFEST,
    log:
        "logs/split_manifest/split_manifest.log",
    benchmark:
        "benchmarks/split_manifest/split_manifest.tsv"
    conda:
        "../../envs/data.yaml"
    params:
        split=canonical(config["split"]),
    script:
        "../scripts/split_manifest.py"
