rule fit_plausibility:
    input:
        atlas=ATLAS_H5,
        classifier=FACING_CLASSIFIER,
    output:
        SCREEN_MODEL,
    log:
        "logs/fit_plausibility/fit_plausibility.log",
    benchmark:
        "benchmarks/fit_plausibility/fit_plausibility.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=job_memory_mb(config, "fit_plausibility"),
    params:
        settings=canonical(config["audit"]["screen"]["settings"]),
    script:
        "../scripts/fit_plausibility.py"


rule screen_samples:
    input:
        unpack(screening_landmarks),
        model=SCREEN_MODEL,
        manifests=audited_sample_manifests,
        shards=audited_shard_stores,
    output:
        # One job for every audited set: the screen is fast, a job's start-up is not.
        directory(SCREENING_SETS),
    log:
        "logs/screen_samples/screen_samples.log",
    benchmark:
        "benchmarks/screen_samples/screen_samples.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=job_memory_mb(config, "screen_samples"),
    params:
        threshold=config["audit"]["screen"]["threshold"],
        # the anatomical flags (their corruptions are the evaluation's alone)
        min_confidence=config["anatomy"]["screen"]["min_confidence"],
        percentiles=canonical(config["anatomy"]["screen"]["percentiles"]),
    script:
        "../scripts/screen_samples.py"


# The screens measured (issue 21 item 4): held-out real images against corrupted copies; an output
# of the anatomy stage's record (common.smk: anatomy_outputs), as it needs the atlas's keypoints.
rule screen_evaluation:
    input:
        atlas=ATLAS_H5,
        manifest=SPLIT_MANIFEST,
        facing=FACING_CLASSIFIER,
        landmark_model=LANDMARK_MODEL,
        held_out=HELD_OUT_LANDMARKS,
    output:
        table=report(
            SCREEN_AUCS,
            caption="../report/screen_evaluation.rst",
            category="Audit",
        ),
        figure=report(
            SCREEN_AUCS_FIGURE,
            caption="../report/screen_evaluation.rst",
            category="Audit",
        ),
    log:
        "logs/screen_evaluation/screen_evaluation.log",
    benchmark:
        "benchmarks/screen_evaluation/screen_evaluation.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=job_memory_mb(config, "screen_evaluation"),
    params:
        threshold=config["audit"]["screen"]["threshold"],
        settings=canonical(config["audit"]["screen"]["settings"]),
        anatomy=canonical(config["anatomy"]["screen"]),
    script:
        "../scripts/screen_evaluation.py"


rule merge_screening:
    input:
        sets=SCREENING_SETS,
        reviews=review_files,
    output:
        merged=MERGED_SCREENING,
        conflicts=SCREENING_CONFLICTS,
        counts=report(
            SCREENING_COUNTS,
            caption="../report/screening_counts.rst",
            category="Audit",
        ),
        figure=report(
            SCREENING_COUNTS_FIGURE,
            caption="../report/screening_counts.rst",
            category="Audit",
        ),
    log:
        "logs/merge_screening/merge_screening.log",
    benchmark:
        "benchmarks/merge_screening/merge_screening.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/merge_screening.py"


rule memorization_audit:
    input:
        atlas=ATLAS_H5,
        classifier=FACING_CLASSIFIER,
        manifests=audited_sample_manifests,
        shards=audited_shard_stores,
        weights=audit_weights_file(),
    output:
        report(
            directory(MEMORIZATION),
            patterns=["{name}.png"],
            caption="../report/memorization.rst",
            category="Audit",
        ),
    log:
        "logs/memorization_audit/memorization_audit.log",
    benchmark:
        "benchmarks/memorization_audit/memorization_audit.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=job_memory_mb(config, "memorization_audit"),
    params:
        encoder=memorization_encoder(),
        top=config["audit"]["memorization"]["top"],
        cache_dir=MEMORIZATION_CACHE,
    script:
        "../scripts/memorization_audit.py"


rule review_pages:
    input:
        unpack(screening_landmarks),
        sets=SCREENING_SETS,
        manifests=audited_sample_manifests,
        shards=audited_shard_stores,
    output:
        directory(SCREENING_REVIEW),
    log:
        "logs/review_pages/review_pages.log",
    benchmark:
        "benchmarks/review_pages/review_pages.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        review=canonical(config["audit"]["review"]),
    script:
        "../scripts/review_pages.py"


rule pairs_review_page:
    input:
        memorization=MEMORIZATION,
        atlas=ATLAS_H5,
        classifier=FACING_CLASSIFIER,
        manifests=audited_sample_manifests,
        shards=audited_shard_stores,
    output:
        PAIRS_REVIEW,
    log:
        "logs/pairs_review_page/pairs_review_page.log",
    benchmark:
        "benchmarks/pairs_review_page/pairs_review_page.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/pairs_review_page.py"


rule merge_pair_verdicts:
    input:
        memorization=MEMORIZATION,
        verdicts=pair_verdict_files,
    output:
        merged=PAIR_VERDICTS,
        disagreements=PAIR_DISAGREEMENTS,
    log:
        "logs/merge_pair_verdicts/merge_pair_verdicts.log",
    benchmark:
        "benchmarks/merge_pair_verdicts/merge_pair_verdicts.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/merge_pair_verdicts.py"
