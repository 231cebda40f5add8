import logging
from pathlib import Path

from radsynth.audit.plausibility import save_model
from radsynth.audit.scoring import fit_on_atlas
from radsynth.core.config import load_settings
from radsynth.core.logs import log_to
from radsynth.core.settings.audit import ScreenSettings

with log_to(snakemake.log[0]):
    model = fit_on_atlas(
        Path(snakemake.input.atlas),
        Path(snakemake.input.classifier),
        settings=load_settings(ScreenSettings, snakemake.params.settings, "audit.screen.settings"),
        # Operational: the classifier's batch changes no answer, so it is read here, not a param.
        batch_size=snakemake.config["audit"]["batch_size"],
    )
    logging.info("plausibility screen fitted on %d real images", len(model.real_ids))
    save_model(model, Path(snakemake.output[0]))
