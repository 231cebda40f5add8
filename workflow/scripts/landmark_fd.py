from pathlib import Path

from radsynth.anatomy.fidelity_stage import write_landmark_fd
from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance

with log_to(snakemake.log[0]):
    checkpoint = snakemake.params.checkpoint
    write_landmark_fd(
        Path(snakemake.input.model),
        [Path(store) for store in snakemake.input.shards],
        Path(snakemake.input.atlas_features),
        Path(snakemake.output[0]),
        step=checkpoint * snakemake.config["training"]["checkpoint_every"],
        checkpoint=checkpoint,
        batch_size=snakemake.config["anatomy"]["batch_size"],
        provenance=provenance(snakemake.config),
    )
