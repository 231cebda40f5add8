from pathlib import Path

from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance
from radsynth.sample.gather import plot_checkpoint_grid

with log_to(snakemake.log[0]):
    plot_checkpoint_grid(
        Path(snakemake.input.manifest),
        Path(snakemake.output[0]),
        checkpoint_label=snakemake.wildcards.ckpt,
        grid_images=snakemake.params.grid_images,
        provenance=provenance(snakemake.config),
    )
