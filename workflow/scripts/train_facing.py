import sys
from pathlib import Path

from radsynth.sample.facing import settings_from_config, train_from_atlas
from radsynth.core.provenance import provenance

sys.stderr = open(snakemake.log[0], "w")
report = train_from_atlas(
    Path(snakemake.input.atlas),
    Path(snakemake.input.manifest),
    Path(snakemake.output.classifier),
    Path(snakemake.output.report),
    settings=settings_from_config(snakemake.params.facing),
    provenance=provenance(snakemake.config),
    progress=True,
)
print(report, file=sys.stderr)
