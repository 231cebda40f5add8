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
    params:
        facing=config["facing"],
    script:
        "../scripts/train_facing.py"


rule sample_shard:
    input:
        done=expand(TRAIN_DONE, run="full"),
        selection=CHECKPOINT_SELECTION,
    output:
        directory(SHARD_STORE),
    log:
        "logs/sample_shard/{sample_set}/{ckpt}/shard{shard}.log",
    benchmark:
        "benchmarks/sample_shard/{sample_set}/{ckpt}/shard{shard}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    params:
        checkpoint=checkpoint_file,
        settings=config_sections("model", "diffusion", "training", "sampling"),
        work_dir="results/samples/.work/{sample_set}/{ckpt}",
    script:
        "../scripts/sample_shard.py"


rule gather_samples:
    input:
        shards=shard_stores,
        classifier=FACING_CLASSIFIER,
    output:
        manifest=SAMPLE_MANIFEST,
        grid=report(
            SAMPLE_GRID,
            caption="../report/sample_grid.rst",
            category="Samples",
            subcategory="{sample_set}",
        ),
    log:
        "logs/gather_samples/{sample_set}/{ckpt}.log",
    conda:
        "../../envs/torch.yaml"
    params:
        gather=config["sampling"]["gather"],
    script:
        "../scripts/gather_samples.py"
