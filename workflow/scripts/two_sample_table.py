from pathlib import Path

from radsynth.anatomy.fidelity_stage import write_two_sample_table
from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance

with log_to(snakemake.log[0]):
    write_two_sample_table(
        [Path(path) for path in snakemake.input],
        Path(snakemake.output.table),
        Path(snakemake.output.figure),
        provenance=provenance(snakemake.config),
    )
