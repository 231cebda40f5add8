import sys
from pathlib import Path

from radsynth.data.preprocess import NegativeDetection, preprocess_atlas
from radsynth.core.provenance import provenance

sys.stderr = open(snakemake.log[0], "w")
settings = snakemake.params.settings
summary = preprocess_atlas(
    Path(snakemake.input.images),
    Path(snakemake.input.annotations),
    Path(snakemake.output.atlas),
    Path(snakemake.output.rejects),
    size=settings["size"],
    resize_mode=settings["resize_mode"],
    max_rejected_fraction=settings["max_rejected_fraction"],
    detection=NegativeDetection(**settings["negative_detection"]),
    provenance=provenance(snakemake.config),
)
print(summary, file=sys.stderr)
