import logging
from pathlib import Path

from radsynth.audit.screen_evaluation import evaluate_screens
from radsynth.core.config import load_settings
from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance
from radsynth.core.settings.audit import ScreenSettings

with log_to(snakemake.log[0]):
    anatomy = snakemake.params.anatomy
    table = evaluate_screens(
        Path(snakemake.input.atlas),
        Path(snakemake.input.manifest),
        Path(snakemake.input.facing),
        Path(snakemake.input.landmark_model),
        Path(snakemake.input.held_out),
        table_csv=Path(snakemake.output.table),
        figure_png=Path(snakemake.output.figure),
        threshold=snakemake.params.threshold,
        settings=load_settings(ScreenSettings, snakemake.params.settings, "audit.screen.settings"),
        min_confidence=anatomy["min_confidence"],
        percentiles=anatomy["percentiles"],
        corruptions=anatomy["corruptions"],
        # The curvature class is not screened: its thresholds change no flag.
        curvature_thresholds_deg=snakemake.config["anatomy"]["curvature_thresholds_deg"],
        # Operational: batch and chunk sizes change no score.
        facing_batch_size=snakemake.config["audit"]["batch_size"],
        landmark_batch_size=snakemake.config["anatomy"]["batch_size"],
        chunk_size=snakemake.config["audit"]["chunk_size"],
        provenance=provenance(snakemake.config),
    )
    logging.info(
        "ROC AUC per corruption and screen:\n%s",
        table.pivot(index="corruption", columns="screen", values="roc_auc").to_string(),
    )
