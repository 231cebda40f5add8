from pathlib import Path

from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance
from radsynth.turing.quartets import key_path
from radsynth.turing.ratings import ratings_folder
from radsynth.turing.stats import run_stats

with log_to(snakemake.log[0]):
    statistics = snakemake.params.statistics
    run_stats(
        ratings_folder(snakemake.input.ratings),
        key_path(Path(snakemake.params.study_dir)),
        Path(snakemake.output["results.md"]).parent,
        simulated=snakemake.params.simulated,
        provenance=provenance(snakemake.config),
        conf_level=statistics["conf_level"],
        sensitivity_digits_rank=statistics["wilcoxon_sensitivity_digits_rank"],
    )
