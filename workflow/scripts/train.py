import sys
from pathlib import Path

from radsynth.core.provenance import provenance
from radsynth.train.loop import train_job

sys.stderr = open(snakemake.log[0], "w")
status = train_job(
    Path(snakemake.input.atlas),
    Path(snakemake.input.manifest) if snakemake.input.manifest else None,
    Path(snakemake.params.run_dir),
    snakemake.params.settings,
    Path(snakemake.output.done),
    max_wall_time_s=snakemake.params.max_wall_time_h * 3600,
    provenance=provenance(snakemake.config),
)
sys.exit(status)
