from pathlib import Path

from radsynth.anatomy.stage import utility_figure
from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance

with log_to(snakemake.log[0]):
    utility_figure(
        Path(snakemake.input.students),
        Path(snakemake.input.evaluation),
        summary_csv=Path(snakemake.output.summary),
        figure_png=Path(snakemake.output.figure),
        provenance=provenance(snakemake.config),
    )
