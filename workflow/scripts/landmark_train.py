from pathlib import Path

from radsynth.anatomy.stage import train_split_landmark_model
from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance

with log_to(snakemake.log[0]):
    # params.training decides when the job reruns; the job reads the whole section, the resume
    # cadence (operational) included, from the config.
    train_split_landmark_model(
        Path(snakemake.input.atlas),
        Path(snakemake.input.manifest),
        model_path=Path(snakemake.output.model),
        work_root=Path(snakemake.params.work_root),
        network=snakemake.params.network,
        training=snakemake.config["anatomy"]["training"],
        image_size=snakemake.params.image_size,
        # operational: the validation passes' batch bounds memory, changes no weight
        inference_batch_size=snakemake.config["anatomy"]["batch_size"],
        provenance=provenance(snakemake.config),
    )
