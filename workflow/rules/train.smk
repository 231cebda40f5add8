rule train:
    input:
        atlas=ATLAS_H5,
        manifest=train_manifest,
        previous=previous_segment,
    output:
        reached=TRAIN_REACHED,
    log:
        "logs/train/{run}/step{step}.log",
    benchmark:
        "benchmarks/train/{run}/step{step}.tsv"
    conda:
        "../../envs/torch.yaml"
    # One thread: on a CPU the split and full runs then train side by side (more steps per second
    # in total than one run on two threads); on a GPU the thread only feeds the device.
    threads: 1
    resources:
        runtime=train_runtime_minutes,
        mem_mb=job_memory_mb(config, "train"),
        # one data-parallel process per GPU (train_jobs.gpus; the job runs `accelerate launch`)
        gpu=config["train_jobs"]["gpus"],
    params:
        # Only what changes the weights: not num_steps (a longer run continues this one, and a
        # segment's step is in its path), not validation batch size or resume-point spacing.
        settings=result_settings(config),
        runs_root=TRAIN_RUNS,
    script:
        "../scripts/train.py"


rule loss_curves:
    input:
        done=lambda wildcards: train_done(wildcards.run),
        selection=CHECKPOINT_SELECTION,
    output:
        report(
            LOSS_CURVES,
            caption="../report/loss_curves.rst",
            category="Training",
            subcategory="{run}",
        ),
    log:
        "logs/loss_curves/{run}.log",
    benchmark:
        "benchmarks/loss_curves/{run}.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        smoothing=config["checkpoints"]["loss_figure_smoothing"],
    script:
        "../scripts/loss_curves.py"
