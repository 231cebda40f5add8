import logging
from pathlib import Path

from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance
from radsynth.release.card import AnatomyFiles
from radsynth.release.package import build_package

with log_to(snakemake.log[0]):
    # the anatomy tables are inputs only for an atlas with keypoints (common.smk:
    # release_anatomy_tables)
    anatomy = (
        AnatomyFiles(
            landmark_summary=Path(snakemake.input.landmark_summary),
            fidelity=Path(snakemake.input.fidelity),
            two_sample=Path(snakemake.input.two_sample),
            utility=Path(snakemake.input.utility),
        )
        if "landmark_summary" in snakemake.input.keys()
        else None
    )
    files = build_package(
        Path(snakemake.output[0]),
        merged_csv=Path(snakemake.input.merged),
        counts_csv=Path(snakemake.input.counts),
        manifests=[Path(manifest) for manifest in snakemake.input.manifests],
        memorization_dir=Path(snakemake.input.memorization),
        atlas_h5=Path(snakemake.input.atlas),
        settings=snakemake.params.release,
        data=snakemake.params.data,
        checkpoint_every=snakemake.params.checkpoint_every,
        config_values=snakemake.params.card_values,
        provenance=provenance(snakemake.config),
        anatomy=anatomy,
    )
    logging.info("release package %s: %s", snakemake.output[0], ", ".join(files))
