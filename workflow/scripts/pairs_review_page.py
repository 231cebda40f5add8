import logging
from pathlib import Path

from radsynth.audit.review import write_workflow_pairs_review
from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance

with log_to(snakemake.log[0]):
    page = write_workflow_pairs_review(
        Path(snakemake.input.memorization) / "pairs.csv",
        Path(snakemake.input.atlas),
        Path(snakemake.input.classifier),
        [Path(manifest) for manifest in snakemake.input.manifests],
        Path(snakemake.output[0]),
        # Operational: the classifier's batch changes no answer.
        batch_size=snakemake.config["audit"]["batch_size"],
        provenance=provenance(snakemake.config),
    )
    logging.info("%d pairs, %.1f MB", page["n_pairs"], page["html_bytes"] / 1e6)
