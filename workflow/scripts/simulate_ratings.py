import sys
from pathlib import Path

from radsynth.turing.simulation import write_simulated_ratings

sys.stderr = open(snakemake.log[0], "w")
paths = write_simulated_ratings(
    Path(snakemake.input[0]),
    Path(snakemake.output[0]),
    checkpoint_labels=snakemake.params.labels,
    simulation=snakemake.params.simulation,
)
print(f"{len(paths)} simulated rater files", file=sys.stderr)
