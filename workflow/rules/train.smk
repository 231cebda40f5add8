rule train:
    input:
        atlas=ATLAS_H5,
        manifest=train_manifest,
    output:
        done=TRAIN_DONE,
    log:
        "logs/train/{run}.log",
    benchmark:
        "benchmarks/train/{run}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        runtime=train_runtime_minutes,
    params:
        run_dir=lambda wildcards: train_dir(wildcards.run),
        max_wall_time_h=config["train_jobs"]["max_wall_time_h"],
    script:
        "../scripts/train.py"
