import logging
from pathlib import Path

from radsynth.audit.scoring import screen_gathered_sets
from radsynth.audit.screening import EXCLUDE
from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance

with log_to(snakemake.log[0]):
    manifests = screen_gathered_sets(
        [Path(manifest) for manifest in snakemake.input.manifests],
        Path(snakemake.input.model),
        Path(snakemake.output[0]),
        threshold=snakemake.params.threshold,
        # Operational: bounds the nearest-real search's memory, changes no score.
        chunk_size=snakemake.config["audit"]["chunk_size"],
        provenance=provenance(snakemake.config),
    )
    for label, manifest in manifests.items():
        logging.info(
            "%s: %d images screened, %d proposed for exclusion",
            label,
            len(manifest),
            int((manifest["proposed"] == EXCLUDE).sum()),
        )
