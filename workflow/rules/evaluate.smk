localrules:
    fetch_weights,


rule fetch_weights:
    output:
        WEIGHTS,
    log:
        "logs/fetch_weights/{weights_file}.log",
    benchmark:
        "benchmarks/fetch_weights/{weights_file}.tsv"
    conda:
        "../../envs/data.yaml"
    params:
        # Which file, from where; the download time-out is an operational default.
        weights=weights_spec,
    script:
        "../scripts/fetch_weights.py"


rule real_features:
    input:
        atlas=ATLAS_H5,
        weights=fid_weights_file(),
    output:
        REAL_FEATURES_RECORD,
    log:
        "logs/real_features/real_features.log",
    benchmark:
        "benchmarks/real_features/real_features.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=job_memory_mb(config, "real_features"),
        gpu=1,
    params:
        extractor=extractor_settings(),
        cache_dir=REAL_FEATURES_CACHE,
    script:
        "../scripts/real_features.py"


rule fid_checkpoint:
    input:
        shards=fid_shard_stores,
        atlas=ATLAS_H5,
        real_features=REAL_FEATURES_RECORD,
        weights=fid_weights_file(),
    output:
        FID_ROW,
    log:
        "logs/fid_checkpoint/{ckpt}.log",
    benchmark:
        "benchmarks/fid_checkpoint/{ckpt}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=job_memory_mb(config, "fid_checkpoint"),
        gpu=1,
    params:
        checkpoint=checkpoint_number,
        extractor=extractor_settings(),
        metrics=canonical(config["evaluate"]["metrics"]),
        cache_dir=REAL_FEATURES_CACHE,
    script:
        "../scripts/fid_checkpoint.py"


rule fid_table:
    input:
        fid_rows,
    output:
        table=report(
            FID_TABLE,
            caption="../report/fid_table.rst",
            category="Evaluation",
        ),
        figure=report(
            FID_FIGURE,
            caption="../report/fid_vs_step.rst",
            category="Evaluation",
        ),
    log:
        "logs/fid_table/fid_table.log",
    benchmark:
        "benchmarks/fid_table/fid_table.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/fid_table.py"


checkpoint select_checkpoints:
    input:
        split=train_done("split"),
        full=train_done("full"),
        fid=FID_TABLE,
    output:
        report(
            CHECKPOINT_SELECTION,
            caption="../report/checkpoint_selection.rst",
            category="Training",
        ),
    log:
        "logs/select_checkpoints/select_checkpoints.log",
    benchmark:
        "benchmarks/select_checkpoints/select_checkpoints.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        checkpoints=pick(config["checkpoints"], "selected", "convergence"),
    script:
        "../scripts/select_checkpoints.py"
