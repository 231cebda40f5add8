import json
import sys
from pathlib import Path

from radsynth.train.selection import select_checkpoints
from radsynth.core.provenance import provenance

sys.stderr = open(snakemake.log[0], "w")
checkpoints = snakemake.params.checkpoints
selection = select_checkpoints(
    Path(snakemake.params.split_index),
    Path(snakemake.params.full_index),
    None,
    Path(snakemake.output[0]),
    configured=checkpoints["selected"],
    convergence=checkpoints["convergence"],
    provenance=provenance(snakemake.config),
)
print(json.dumps(selection["comparison"], indent=2), file=sys.stderr)
