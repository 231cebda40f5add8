import logging
from pathlib import Path

from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance
from radsynth.sample.facing import settings_from_config, train_from_atlas

with log_to(snakemake.log[0]):
    report = train_from_atlas(
        Path(snakemake.input.atlas),
        Path(snakemake.input.manifest),
        Path(snakemake.output.classifier),
        Path(snakemake.output.report),
        settings=settings_from_config(snakemake.params.facing),
        provenance=provenance(snakemake.config),
        progress=True,
    )
    logging.info("facing classifier: %s", report)
