import logging
from pathlib import Path

from radsynth.audit.scoring import anatomy_reference, screen_gathered_sets
from radsynth.audit.screening import EXCLUDE
from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance

with log_to(snakemake.log[0]):
    # Without the anatomy stage's tables (an atlas without keypoints): plausibility alone.
    held_out = snakemake.input.get("held_out_landmarks")
    anatomy = None
    if held_out:
        anatomy = anatomy_reference(
            Path(held_out),
            min_confidence=snakemake.params.min_confidence,
            percentiles=snakemake.params.percentiles,
        )
    manifests = screen_gathered_sets(
        [Path(manifest) for manifest in snakemake.input.manifests],
        Path(snakemake.input.model),
        Path(snakemake.output[0]),
        threshold=snakemake.params.threshold,
        # Operational: bounds the nearest-real search's memory, changes no score.
        chunk_size=snakemake.config["audit"]["chunk_size"],
        provenance=provenance(snakemake.config),
        landmarks=[Path(table) for table in snakemake.input.get("landmarks", [])],
        anatomy=anatomy,
    )
    for label, manifest in manifests.items():
        logging.info(
            "%s: %d images screened, %d proposed for exclusion",
            label,
            len(manifest),
            int((manifest["proposed"] == EXCLUDE).sum()),
        )
