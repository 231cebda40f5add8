from pathlib import Path

from radsynth.core.logs import log_to
from radsynth.data.qc import plot_preprocess_qc

with log_to(snakemake.log[0]):
    plot_preprocess_qc(
        Path(snakemake.input.atlas),
        Path(snakemake.output[0]),
        n_examples=snakemake.params.qc["n_examples"],
        seed=snakemake.params.qc["seed"],
    )
