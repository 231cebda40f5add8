import sys
from pathlib import Path

from radsynth.core.provenance import provenance
from radsynth.data.split import write_split_for_atlas

sys.stderr = open(snakemake.log[0], "w")
manifest = write_split_for_atlas(
    Path(snakemake.input.atlas),
    Path(snakemake.output[0]),
    val_fraction=snakemake.params.split["val_fraction"],
    seed=snakemake.params.split["seed"],
    provenance=provenance(snakemake.config),
)
print(manifest["subset"].value_counts().to_string(), file=sys.stderr)
