from pathlib import Path

from radsynth.core.logs import log_to
from radsynth.evaluate.weights import fetch_weights, weights_sections

with log_to(snakemake.log[0]):
    weights = snakemake.params.weights
    fetch_weights(
        weights["url"],
        Path(snakemake.output[0]),
        checksum=weights["checksum"],
        landing_page=weights["landing_page"],
        needed_by=weights_sections(snakemake.config)[snakemake.wildcards.weights_file],
    )
