from pathlib import Path

from radsynth.anatomy.stage import set_landmarks
from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance

with log_to(snakemake.log[0]):
    set_landmarks(
        Path(snakemake.input.model),
        Path(snakemake.input.manifest),
        Path(snakemake.output[0]),
        curvature_thresholds_deg=snakemake.params.curvature_thresholds_deg,
        # operational: images per prediction, changes no result
        batch_size=snakemake.config["anatomy"]["batch_size"],
        provenance=provenance(snakemake.config),
    )
