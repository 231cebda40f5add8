import logging
from pathlib import Path

from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance
from radsynth.release.package import build_package

with log_to(snakemake.log[0]):
    files = build_package(
        Path(snakemake.output[0]),
        merged_csv=Path(snakemake.input.merged),
        counts_csv=Path(snakemake.input.counts),
        manifests=[Path(manifest) for manifest in snakemake.input.manifests],
        memorization_dir=Path(snakemake.input.memorization),
        atlas_h5=Path(snakemake.input.atlas),
        settings=snakemake.params.release,
        checkpoint_every=snakemake.params.checkpoint_every,
        config_values=snakemake.params.card_values,
        provenance=provenance(snakemake.config),
    )
    logging.info("release package %s: %s", snakemake.output[0], ", ".join(files))
