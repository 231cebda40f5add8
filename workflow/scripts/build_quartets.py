import sys
from pathlib import Path

from radsynth.core.provenance import provenance
from radsynth.turing.study import build_study

sys.stderr = open(snakemake.log[0], "w")
turing = snakemake.params.turing
manifests = {Path(path).parent.name: Path(path) for path in snakemake.input.manifests}
build_study(
    Path(snakemake.input.atlas),
    Path(snakemake.input.classifier),
    manifests,
    Path(snakemake.output[0]),
    n_quartets=turing["n_quartets"],
    seed=turing["seed"],
    batch_size=snakemake.params.batch_size,
    provenance=provenance(snakemake.config),
)
