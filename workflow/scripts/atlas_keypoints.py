from pathlib import Path

from radsynth.anatomy.stage import record_atlas_keypoints
from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance

with log_to(snakemake.log[0]):
    record_atlas_keypoints(
        Path(snakemake.input.atlas),
        Path(snakemake.output[0]),
        provenance=provenance(snakemake.config),
    )
