import sys
from pathlib import Path

from radsynth.core.provenance import provenance
from radsynth.turing.stats import run_stats
from radsynth.turing.quartets import key_path
from radsynth.turing.ratings import ratings_folder

sys.stderr = open(snakemake.log[0], "w")
statistics = snakemake.params.statistics
run_stats(
    ratings_folder(snakemake.input.ratings),
    key_path(Path(snakemake.input.study)),
    Path(snakemake.output["results.md"]).parent,
    simulated=snakemake.params.simulated,
    provenance=provenance(snakemake.config),
    chance=statistics["chance"],
    conf_level=statistics["conf_level"],
    digits_rank=statistics["wilcoxon_digits_rank"],
)
