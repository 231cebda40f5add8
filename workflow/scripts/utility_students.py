from pathlib import Path

from radsynth.anatomy.stage import utility_students
from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance

with log_to(snakemake.log[0]):
    # params.training decides when the job reruns; the whole section (with the operational resume
    # cadence) comes from the config.
    utility_students(
        Path(snakemake.input.teacher),
        Path(snakemake.input.atlas),
        Path(snakemake.input.manifest),
        [Path(store) for store in snakemake.input.synthetic],
        Path(snakemake.output[0]),
        fractions=snakemake.params.fractions,
        seeds=snakemake.params.seeds,
        training=snakemake.config["anatomy"]["training"],
        work_root=Path(snakemake.params.work_root),
        # operational: images per prediction, changes no result
        inference_batch_size=snakemake.config["anatomy"]["batch_size"],
        provenance=provenance(snakemake.config),
    )
