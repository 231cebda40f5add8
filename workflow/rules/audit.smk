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
    params:
        settings=canonical(config["audit"]["screen"]["settings"]),
    script:
        "../scripts/fit_plausibility.py"


rule screen_samples:
    input:
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
    params:
        threshold=config["audit"]["screen"]["threshold"],
    script:
        "../scripts/screen_samples.py"


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
    params:
        encoder=memorization_encoder(),
        top=config["audit"]["memorization"]["top"],
        cache_dir=MEMORIZATION_CACHE,
    script:
        "../scripts/memorization_audit.py"


rule review_pages:
    input:
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
