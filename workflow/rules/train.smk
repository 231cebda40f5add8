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
        settings=config_sections("model", "diffusion", "training"),
        max_wall_time_h=config["train_jobs"]["max_wall_time_h"],
    script:
        "../scripts/train.py"


rule loss_curves:
    input:
        done=TRAIN_DONE,
    output:
        report(
            LOSS_CURVES,
            caption="../report/loss_curves.rst",
            category="Training",
            subcategory="{run}",
        ),
    log:
        "logs/loss_curves/{run}.log",
    conda:
        "../../envs/torch.yaml"
    params:
        run_dir=lambda wildcards: train_dir(wildcards.run),
        smoothing=config["checkpoints"]["loss_figure_smoothing"],
        selected=config["checkpoints"]["selected"],
    script:
        "../scripts/loss_curves.py"


rule select_checkpoints:
    input:
        split=expand(TRAIN_DONE, run="split"),
        full=expand(TRAIN_DONE, run="full"),
    output:
        CHECKPOINT_SELECTION,
    log:
        "logs/select_checkpoints/select_checkpoints.log",
    conda:
        "../../envs/torch.yaml"
    params:
        split_index=f"{train_dir('split')}/checkpoints/index.csv",
        full_index=f"{train_dir('full')}/checkpoints/index.csv",
        checkpoints=config["checkpoints"],
    script:
        "../scripts/select_checkpoints.py"
