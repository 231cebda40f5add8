rule train_facing:
    input:
        atlas=ATLAS_H5,
        manifest=SPLIT_MANIFEST,
    output:
        classifier=FACING_CLASSIFIER,
        report="results/facing/report.json",
    log:
        "logs/train_facing/train_facing.log",
    benchmark:
        "benchmarks/train_facing/train_facing.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        mem_mb=job_memory_mb(config, "train_facing"),
    params:
        facing=canonical(config["facing"]),
    script:
        "../scripts/train_facing.py"


rule sample_shard:
    input:
        reached=checkpoint_marker,
    output:
        directory(SHARD_STORE),
    log:
        "logs/sample_shard/{sample_set}/{ckpt}/shard{shard}.log",
    benchmark:
        "benchmarks/sample_shard/{sample_set}/{ckpt}/shard{shard}.tsv"
    conda:
        "../../envs/torch.yaml"
    # One thread locally (two shards run side by side on a small CPU); profiles/slurm sets more.
    threads: 1
    resources:
        mem_mb=job_memory_mb(config, "sample_shard"),
        gpu=1,
    params:
        checkpoint=checkpoint_number,
        sampling=sampling_settings,
        plan=sample_set_plan,
        work_dir="results/samples/.work/{sample_set}/{ckpt}",
    script:
        "../scripts/sample_shard.py"


rule gather_samples:
    input:
        shards=shard_stores,
        classifier=FACING_CLASSIFIER,
    output:
        manifest=SAMPLE_MANIFEST,
    log:
        "logs/gather_samples/{sample_set}/{ckpt}.log",
    benchmark:
        "benchmarks/gather_samples/{sample_set}/{ckpt}.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/gather_samples.py"


rule sample_grid:
    input:
        manifest=SAMPLE_MANIFEST,
        shards=shard_stores,
    output:
        report(
            SAMPLE_GRID,
            caption="../report/sample_grid.rst",
            category="Samples",
            subcategory="{sample_set}",
        ),
    log:
        "logs/sample_grid/{sample_set}/{ckpt}.log",
    benchmark:
        "benchmarks/sample_grid/{sample_set}/{ckpt}.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        grid_images=config["sampling"]["gather"]["grid_images"],
    script:
        "../scripts/sample_grid.py"
