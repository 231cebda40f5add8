from pathlib import Path

from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance
from radsynth.turing.figures import plot_example_quartet, plot_rating_violins
from radsynth.turing.quartets import key_path
from radsynth.turing.ratings import load_key, load_ratings, ratings_folder

with log_to(snakemake.log[0]):
    study = Path(snakemake.params.study_dir)
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
        study,
        Path(snakemake.output.quartet),
        quartet=snakemake.params.example_quartet,
        provenance=record,
    )
