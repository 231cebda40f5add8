import sys
from pathlib import Path

from radsynth.demo.phantom import generate_atlas

sys.stderr = open(snakemake.log[0], "w")
generate_atlas(
    Path(snakemake.output.images).parent,
    Path(snakemake.output.truth),
    **snakemake.params.demo,
)
