import logging
from pathlib import Path

from radsynth.audit.review import write_set_reviews
from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance

with log_to(snakemake.log[0]):
    review = snakemake.params.review
    pages = write_set_reviews(
        Path(snakemake.input.sets),
        [Path(manifest) for manifest in snakemake.input.manifests],
        Path(snakemake.output[0]),
        sort=review["sort"],
        reasons=review["reasons"],
        page_size=review["page_size"],
        provenance=provenance(snakemake.config),
        # The anatomy stage's landmark tables (none for an atlas without keypoints).
        landmark_tables=[Path(table) for table in snakemake.input.get("landmarks", [])],
    )
    for label, page in pages.items():
        logging.info(
            "%s: %d images on %d pages, page %.1f MB, sprite sheets %.1f MB",
            label,
            page["n_images"],
            page["n_pages"],
            page["html_bytes"] / 1e6,
            page["sheet_bytes"] / 1e6,
        )
