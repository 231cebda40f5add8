import sys
from pathlib import Path

from radsynth.core.provenance import provenance
from radsynth.turing.form import write_rating_form

sys.stderr = open(snakemake.log[0], "w")
form_id = write_rating_form(
    Path(snakemake.input[0]) / "images",
    Path(snakemake.output[0]),
    title=snakemake.params.form["title"],
    instructions=snakemake.params.form["instructions"],
    provenance=provenance(snakemake.config),
)
print(f"form id {form_id}", file=sys.stderr)
