import logging
from pathlib import Path

from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance
from radsynth.sample.gather import gather_checkpoint

with log_to(snakemake.log[0]):
    manifest = gather_checkpoint(
        [Path(store) for store in snakemake.input.shards],
        Path(snakemake.input.classifier),
        Path(snakemake.output.manifest),
        checkpoint_label=snakemake.wildcards.ckpt,
        # Operational: the classifier's batch changes no answer, so it is read here, not a param.
        batch_size=snakemake.config["sampling"]["gather"]["batch_size"],
        provenance=provenance(snakemake.config),
    )
    logging.info("images per detected facing:\n%s", manifest["facing"].value_counts().to_string())
