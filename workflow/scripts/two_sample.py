from pathlib import Path

from radsynth.anatomy.fidelity_stage import write_two_sample_row
from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance

with log_to(snakemake.log[0]):
    checkpoint = snakemake.params.checkpoint
    write_two_sample_row(
        Path(snakemake.input.atlas),
        Path(snakemake.input.manifest),
        [Path(store) for store in snakemake.input.shards],
        Path(snakemake.output[0]),
        step=checkpoint * snakemake.config["training"]["checkpoint_every"],
        checkpoint=checkpoint,
        settings=snakemake.params.settings,
        # operational: images per scoring batch, changes no result
        inference_batch_size=snakemake.config["anatomy"]["batch_size"],
        provenance=provenance(snakemake.config),
    )
