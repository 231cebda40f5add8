from pathlib import Path

from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance
from radsynth.turing.study import build_or_confirm_study

with log_to(snakemake.log[0]):
    design = snakemake.params.design
    build_or_confirm_study(
        Path(snakemake.input.atlas),
        Path(snakemake.input.classifier),
        {Path(path).parent.name: Path(path) for path in snakemake.input.manifests},
        Path(snakemake.params.study_dir),
        Path(snakemake.output[0]),
        n_quartets=design["n_quartets"],
        seed=design["seed"],
        # Operational: the facing classifier's batch changes no answer, so it is not a param.
        batch_size=snakemake.config["sampling"]["gather"]["batch_size"],
        provenance=provenance(snakemake.config),
    )
