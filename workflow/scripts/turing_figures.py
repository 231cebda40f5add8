import sys
from pathlib import Path

from radsynth.core.provenance import provenance
from radsynth.turing.ratings import load_key, load_ratings
from radsynth.turing.quartets import key_path
from radsynth.turing.ratings import ratings_folder
from radsynth.turing.figures import plot_example_quartet, plot_rating_violins

sys.stderr = open(snakemake.log[0], "w")
study = Path(snakemake.input.study)
key = load_key(key_path(study))
record = provenance(snakemake.config)
plot_rating_violins(
    load_ratings(ratings_folder(snakemake.input.ratings), key),
    key,
    Path(snakemake.output.violins),
    simulated=snakemake.params.simulated,
    provenance=record,
)
plot_example_quartet(
    study, Path(snakemake.output.quartet), quartet=snakemake.params.example_quartet, provenance=record
)
