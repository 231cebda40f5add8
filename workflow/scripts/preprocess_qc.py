import sys
from pathlib import Path

from radsynth.data.qc import plot_preprocess_qc

sys.stderr = open(snakemake.log[0], "w")
plot_preprocess_qc(
    Path(snakemake.input.atlas),
    Path(snakemake.output[0]),
    n_examples=snakemake.params.qc["n_examples"],
    seed=snakemake.params.qc["seed"],
)
