import sys
from pathlib import Path

from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance
from radsynth.train.launch import train_job_processes

with log_to(snakemake.log[0]):
    # params.settings decide when the job reruns; the job reads its whole sections, operational
    # keys (validation batch size, resume spacing, time budget) included, from the config.
    # With train_jobs.gpus > 1 the job runs `accelerate launch` with one process per GPU.
    status = train_job_processes(
        snakemake.config["train_jobs"]["gpus"],
        atlas_h5=Path(snakemake.input.atlas),
        manifest_csv=Path(snakemake.input.manifest) if snakemake.input.manifest else None,
        runs_root=Path(snakemake.params.runs_root),
        config={key: snakemake.config[key] for key in ("model", "diffusion", "training")},
        marker_json=Path(snakemake.output.reached),
        until_step=int(snakemake.wildcards.step),
        max_wall_time_s=snakemake.config["train_jobs"]["max_wall_time_h"] * 3600,
        provenance=provenance(snakemake.config),
    )
# Outside the log's block: 75 asks for a resumed attempt and is no error to log.
sys.exit(status)
