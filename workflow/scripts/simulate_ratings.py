import logging
from pathlib import Path

from radsynth.core.logs import log_to
from radsynth.turing.simulation import write_simulated_ratings

with log_to(snakemake.log[0]):
    paths = write_simulated_ratings(
        Path(snakemake.params.study_dir),
        Path(snakemake.output[0]),
        checkpoint_labels=snakemake.params.labels,
        simulation=snakemake.params.simulation,
    )
    logging.info("%d simulated rater files", len(paths))
