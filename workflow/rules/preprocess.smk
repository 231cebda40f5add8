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
        settings=config["preprocess"],
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
    conda:
        "../../envs/data.yaml"
    params:
        qc=config["preprocess"]["qc"],
    script:
        "../scripts/preprocess_qc.py"


rule split_manifest:
    input:
        atlas=ATLAS_H5,
    output:
        SPLIT_MANIFEST,
    log:
        "logs/split_manifest/split_manifest.log",
    conda:
        "../../envs/data.yaml"
    params:
        split=config["split"],
    script:
        "../scripts/split_manifest.py"
