from pathlib import Path

from radsynth.anatomy.stage import evaluate_split_landmark_model
from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance

with log_to(snakemake.log[0]):
    evaluate_split_landmark_model(
        Path(snakemake.input.model),
        Path(snakemake.input.atlas),
        Path(snakemake.input.manifest),
        Path(snakemake.input.facing),
        summary_csv=Path(snakemake.output.summary),
        per_landmark_csv=Path(snakemake.output.per_landmark),
        held_out_csv=Path(snakemake.output.held_out),
        curvature_thresholds_deg=snakemake.params.curvature_thresholds_deg,
        # Operational batch sizes: memory only, no result changes.
        batch_size=snakemake.config["anatomy"]["batch_size"],
        facing_batch_size=snakemake.config["sampling"]["gather"]["batch_size"],
        provenance=provenance(snakemake.config),
    )
