rule release_package:
    input:
        # the card's anatomy paragraph reads these; none for an atlas without keypoints
        unpack(release_anatomy_tables),
        merged=MERGED_SCREENING,
        counts=SCREENING_COUNTS,
        manifests=audited_sample_manifests,
        shards=audited_shard_stores,
        memorization=MEMORIZATION,
        atlas=ATLAS_H5,
    output:
        directory(RELEASE_PACKAGE),
    log:
        "logs/release_package/release_package.log",
    benchmark:
        "benchmarks/release_package/release_package.tsv"
    conda:
        "../../envs/data.yaml"
    params:
        release=canonical(config["release"]),
        # what the atlas is: the card's data sentence, licence and citation
        data=data_origin_keys(),
        checkpoint_every=config["training"]["checkpoint_every"],
        card_values=card_values(),
    script:
        "../scripts/release_package.py"
