# The anatomy stage (issue 21): a landmark model of the atlas's 23 vertebral keypoints, trained on
# the split run's train subset and tested on its held-out images, then applied to every FID and
# sampled set; utility of synthetic images for landmarking. Skipped for an atlas without
# keypoints (common.smk: anatomy_outputs).


localrules:
    anatomy_stage,


checkpoint atlas_keypoints:
    input:
        atlas=ATLAS_H5,
    output:
        ATLAS_KEYPOINTS,
    log:
        "logs/atlas_keypoints/atlas_keypoints.log",
    benchmark:
        "benchmarks/atlas_keypoints/atlas_keypoints.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        mem_mb=job_memory_mb(config, "atlas_keypoints"),
    script:
        "../scripts/atlas_keypoints.py"


rule landmark_train:
    input:
        atlas=ATLAS_H5,
        manifest=SPLIT_MANIFEST,
    output:
        model=LANDMARK_MODEL,
    log:
        "logs/landmark_train/landmark_train.log",
    benchmark:
        "benchmarks/landmark_train/landmark_train.tsv"
    conda:
        "../../envs/torch.yaml"
    # One thread, as training's: on a small CPU it then runs beside the sampling jobs instead of
    # waiting for both cores to be free.
    threads: 1
    resources:
        mem_mb=job_memory_mb(config, "landmark_train"),
        gpu=1,
    params:
        # the resume cadence (anatomy.training.state_every) is read from the config: it changes
        # no weight
        network=canonical(config["anatomy"]["model"]),
        training=anatomy_training_settings(),
        image_size=config["preprocess"]["size"],
        work_root=LANDMARK_WORK,
    script:
        "../scripts/landmark_train.py"


rule landmark_evaluation:
    input:
        model=LANDMARK_MODEL,
        atlas=ATLAS_H5,
        manifest=SPLIT_MANIFEST,
        facing=FACING_CLASSIFIER,
    output:
        summary=report(
            LANDMARK_SUMMARY,
            caption="../report/landmark_evaluation.rst",
            category="Anatomy",
        ),
        per_landmark=LANDMARK_PER_LANDMARK,
        held_out=HELD_OUT_LANDMARKS,
    log:
        "logs/landmark_evaluation/landmark_evaluation.log",
    benchmark:
        "benchmarks/landmark_evaluation/landmark_evaluation.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        mem_mb=job_memory_mb(config, "landmark_evaluation"),
        gpu=1,
    params:
        curvature_thresholds_deg=curvature_thresholds(),
    script:
        "../scripts/landmark_evaluation.py"


rule set_landmarks:
    input:
        model=LANDMARK_MODEL,
        manifest=SAMPLE_MANIFEST,
        shards=shard_stores,
    output:
        SET_LANDMARKS,
    log:
        "logs/set_landmarks/{sample_set}/{ckpt}.log",
    benchmark:
        "benchmarks/set_landmarks/{sample_set}/{ckpt}.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        mem_mb=job_memory_mb(config, "set_landmarks"),
        gpu=1,
    params:
        curvature_thresholds_deg=curvature_thresholds(),
    script:
        "../scripts/set_landmarks.py"


rule utility_students:
    input:
        teacher=LANDMARK_MODEL,
        atlas=ATLAS_H5,
        manifest=SPLIT_MANIFEST,
        synthetic=utility_shard_stores,
    output:
        UTILITY_STUDENTS,
    log:
        "logs/utility_students/utility_students.log",
    benchmark:
        "benchmarks/utility_students/utility_students.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=job_memory_mb(config, "utility_students"),
        gpu=1,
    params:
        training=anatomy_training_settings(),
        fractions=canonical(config["anatomy"]["utility"]["fractions"]),
        seeds=canonical(config["anatomy"]["utility"]["seeds"]),
        work_root=UTILITY_WORK,
    script:
        "../scripts/utility_students.py"


rule utility_figure:
    input:
        students=UTILITY_STUDENTS,
        evaluation=LANDMARK_SUMMARY,
    output:
        summary=report(
            UTILITY_SUMMARY,
            caption="../report/utility.rst",
            category="Anatomy",
        ),
        figure=report(
            UTILITY_FIGURE,
            caption="../report/utility.rst",
            category="Anatomy",
        ),
    log:
        "logs/utility_figure/utility_figure.log",
    benchmark:
        "benchmarks/utility_figure/utility_figure.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        mem_mb=job_memory_mb(config, "utility_figure"),
    script:
        "../scripts/utility_figure.py"


# Anatomical fidelity (issue 21 item 3): the landmark encoder's Frechet distance of every FID set,
# the geometry distances of every FID and sampled set from the held-out real images', and the
# real-vs-real floor every number is read against.


rule atlas_landmark_features:
    input:
        model=LANDMARK_MODEL,
        atlas=ATLAS_H5,
    output:
        ATLAS_LANDMARK_FEATURES,
    log:
        "logs/atlas_landmark_features/atlas_landmark_features.log",
    benchmark:
        "benchmarks/atlas_landmark_features/atlas_landmark_features.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        mem_mb=job_memory_mb(config, "atlas_landmark_features"),
        gpu=1,
    script:
        "../scripts/atlas_landmark_features.py"


rule landmark_fd:
    input:
        model=LANDMARK_MODEL,
        atlas_features=ATLAS_LANDMARK_FEATURES,
        shards=fid_shard_stores,
    output:
        LANDMARK_FD_ROW,
    log:
        "logs/landmark_fd/{ckpt}.log",
    benchmark:
        "benchmarks/landmark_fd/{ckpt}.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        mem_mb=job_memory_mb(config, "landmark_fd"),
        gpu=1,
    params:
        checkpoint=checkpoint_number,
    script:
        "../scripts/landmark_fd.py"


rule real_floor:
    input:
        model=LANDMARK_MODEL,
        facing=FACING_CLASSIFIER,
        atlas=ATLAS_H5,
        atlas_features=ATLAS_LANDMARK_FEATURES,
        # the evaluate stage's Inception features of every atlas image (its cache)
        real_features=REAL_FEATURES_RECORD,
    output:
        record=REAL_FLOOR,
        halves=REAL_FLOOR_HALVES,
    log:
        "logs/real_floor/real_floor.log",
    benchmark:
        "benchmarks/real_floor/real_floor.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        mem_mb=job_memory_mb(config, "real_floor"),
        gpu=1,
    params:
        # halves of the FID set size (capped at half the atlas), drawn with the fidelity seed
        set_size=config["evaluate"]["samples"]["n_images"],
        seed=config["anatomy"]["fidelity"]["seed"],
        curvature_thresholds_deg=canonical(
            config["anatomy"]["curvature_thresholds_deg"]
        ),
    script:
        "../scripts/real_floor.py"


rule anatomy_fidelity:
    input:
        held_out=HELD_OUT_LANDMARKS,
        sets=fidelity_set_tables,
        floor=REAL_FLOOR,
        floor_halves=REAL_FLOOR_HALVES,
        fd_rows=landmark_fd_rows,
        fid_table=FID_TABLE,
    output:
        fidelity=report(
            ANATOMY_FIDELITY,
            caption="../report/anatomy_fidelity.rst",
            category="Anatomy",
        ),
        fd=report(
            LANDMARK_FD_TABLE,
            caption="../report/anatomy_landmark_fd.rst",
            category="Anatomy",
        ),
    log:
        "logs/anatomy_fidelity/anatomy_fidelity.log",
    benchmark:
        "benchmarks/anatomy_fidelity/anatomy_fidelity.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        mem_mb=job_memory_mb(config, "anatomy_fidelity"),
    params:
        sets=fidelity_sets,
        fidelity=canonical(config["anatomy"]["fidelity"]),
    script:
        "../scripts/anatomy_fidelity.py"


rule anatomy_figure:
    input:
        fidelity=ANATOMY_FIDELITY,
        fd=LANDMARK_FD_TABLE,
    output:
        report(
            ANATOMY_FIGURE,
            caption="../report/anatomy_figure.rst",
            category="Anatomy",
        ),
    log:
        "logs/anatomy_figure/anatomy_figure.log",
    benchmark:
        "benchmarks/anatomy_figure/anatomy_figure.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        mem_mb=job_memory_mb(config, "anatomy_figure"),
    params:
        # display only: a change redraws the figure, nothing else
        measures=canonical(config["anatomy"]["figure"]["measures"]),
    script:
        "../scripts/anatomy_figure.py"


# The two-sample classifier (issue 21 item 6): real train images against half of each FID set,
# tested on the held-out real images and the set's other half.


rule two_sample:
    input:
        atlas=ATLAS_H5,
        manifest=SPLIT_MANIFEST,
        shards=fid_shard_stores,
    output:
        TWO_SAMPLE_ROW,
    log:
        "logs/two_sample/{ckpt}.log",
    benchmark:
        "benchmarks/two_sample/{ckpt}.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        mem_mb=job_memory_mb(config, "two_sample"),
        gpu=1,
    params:
        checkpoint=checkpoint_number,
        settings=canonical(config["anatomy"]["two_sample"]),
    script:
        "../scripts/two_sample.py"


rule two_sample_table:
    input:
        two_sample_rows,
    output:
        table=report(
            TWO_SAMPLE_TABLE,
            caption="../report/two_sample.rst",
            category="Anatomy",
        ),
        figure=report(
            TWO_SAMPLE_FIGURE,
            caption="../report/two_sample.rst",
            category="Anatomy",
        ),
    log:
        "logs/two_sample_table/two_sample_table.log",
    benchmark:
        "benchmarks/two_sample_table/two_sample_table.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        mem_mb=job_memory_mb(config, "two_sample_table"),
    script:
        "../scripts/two_sample_table.py"


rule anatomy_stage:
    input:
        keypoints=ATLAS_KEYPOINTS,
        outputs=anatomy_outputs,
    output:
        ANATOMY_STAGE,
    log:
        "logs/anatomy_stage/anatomy_stage.log",
    benchmark:
        "benchmarks/anatomy_stage/anatomy_stage.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/anatomy_stage.py"
