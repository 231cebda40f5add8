import sys
from pathlib import Path

from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance
from radsynth.train.loop import train_job

with log_to(snakemake.log[0]):
    # params.settings decide when the job reruns; the job reads its whole sections, operational
    # keys (validation batch size, resume spacing, time budget) included, from the config.
    status = train_job(
        Path(snakemake.input.atlas),
        Path(snakemake.input.manifest) if snakemake.input.manifest else None,
        Path(snakemake.params.runs_root),
        {key: snakemake.config[key] for key in ("model", "diffusion", "training")},
        Path(snakemake.output.reached),
        until_step=int(snakemake.wildcards.step),
        max_wall_time_s=snakemake.config["train_jobs"]["max_wall_time_h"] * 3600,
        provenance=provenance(snakemake.config),
    )
# Outside the log's block: 75 asks for a resumed attempt and is no error to log.
sys.exit(status)
