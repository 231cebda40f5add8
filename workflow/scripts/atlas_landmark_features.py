from pathlib import Path

from radsynth.anatomy.fidelity_stage import write_atlas_landmark_features
from radsynth.core.logs import log_to

with log_to(snakemake.log[0]):
    write_atlas_landmark_features(
        Path(snakemake.input.model),
        Path(snakemake.input.atlas),
        Path(snakemake.output[0]),
        batch_size=snakemake.config["anatomy"]["batch_size"],
    )
