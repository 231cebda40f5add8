import logging
from pathlib import Path

from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance
from radsynth.data.split import write_split_for_atlas

with log_to(snakemake.log[0]):
    manifest = write_split_for_atlas(
        Path(snakemake.input.atlas),
        Path(snakemake.output[0]),
        val_fraction=snakemake.params.split["val_fraction"],
        seed=snakemake.params.split["seed"],
        provenance=provenance(snakemake.config),
    )
    logging.info("images per subset:\n%s", manifest["subset"].value_counts().to_string())
