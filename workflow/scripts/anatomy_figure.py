from pathlib import Path

from radsynth.anatomy.fidelity_stage import write_anatomy_figure
from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance

with log_to(snakemake.log[0]):
    write_anatomy_figure(
        Path(snakemake.input.fidelity),
        Path(snakemake.input.fd),
        Path(snakemake.output[0]),
        measures=snakemake.params.measures,
        provenance=provenance(snakemake.config),
    )
