import sys
from pathlib import Path

from radsynth.sample.gather import gather_checkpoint
from radsynth.core.provenance import provenance

sys.stderr = open(snakemake.log[0], "w")
manifest = gather_checkpoint(
    [Path(store) for store in snakemake.input.shards],
    Path(snakemake.input.classifier),
    Path(snakemake.output.manifest),
    Path(snakemake.output.grid),
    checkpoint_label=snakemake.wildcards.ckpt,
    batch_size=snakemake.params.gather["batch_size"],
    grid_images=snakemake.params.gather["grid_images"],
    provenance=provenance(snakemake.config),
)
print(manifest["facing"].value_counts().to_string(), file=sys.stderr)
