import logging
from pathlib import Path

from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance
from radsynth.turing.form import write_rating_form

with log_to(snakemake.log[0]):
    form_id = write_rating_form(
        Path(snakemake.params.study_dir) / "images",
        Path(snakemake.output[0]),
        title=snakemake.params.form["title"],
        instructions=snakemake.params.form["instructions"],
        provenance=provenance(snakemake.config),
    )
    logging.info("form id %s", form_id)
