from pathlib import Path

from radsynth.core.logs import log_to
from radsynth.demo.phantom import generate_atlas

with log_to(snakemake.log[0]):
    generate_atlas(
        Path(snakemake.output.images).parent,
        Path(snakemake.output.truth),
        **snakemake.params.demo,
    )
