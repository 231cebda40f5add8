import logging
from pathlib import Path

from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance
from radsynth.data.negatives import NegativeDetection
from radsynth.data.preprocess import preprocess_atlas

with log_to(snakemake.log[0]):
    settings = snakemake.params.settings
    summary = preprocess_atlas(
        Path(snakemake.input.images),
        Path(snakemake.input.annotations),
        Path(snakemake.output.atlas),
        Path(snakemake.output.rejects),
        # the source's per-image metadata table (the pixel spacing), where the source has one
        metadata_table=Path(snakemake.input.metadata)
        if "metadata" in snakemake.input.keys()
        else None,
        size=settings["size"],
        resize_mode=settings["resize_mode"],
        max_rejected_fraction=snakemake.config["preprocess"]["max_rejected_fraction"],
        detection=NegativeDetection(**settings["negative_detection"]),
        provenance=provenance(snakemake.config),
    )
    logging.info("preprocessing summary: %s", summary)
