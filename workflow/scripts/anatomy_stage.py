from pathlib import Path

from radsynth.anatomy.stage import record_anatomy_stage
from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance

with log_to(snakemake.log[0]):
    record_anatomy_stage(
        Path(snakemake.input.keypoints),
        [Path(path) for path in snakemake.input.outputs],
        Path(snakemake.output[0]),
        provenance=provenance(snakemake.config),
    )
