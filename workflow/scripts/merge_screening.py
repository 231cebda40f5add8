import logging

from radsynth.audit.screening import merge_screening, screened_manifests
from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance

with log_to(snakemake.log[0]):
    counts = merge_screening(
        screened_manifests(snakemake.input.sets),
        snakemake.input.reviews,
        merged_csv=snakemake.output.merged,
        conflicts_csv=snakemake.output.conflicts,
        counts_csv=snakemake.output.counts,
        counts_png=snakemake.output.figure,
        provenance=provenance(snakemake.config),
    )
    logging.info("screening counts (Table S1):\n%s", counts.to_string(index=False))
