import sys
from pathlib import Path

from radsynth.core.provenance import provenance
from radsynth.sample.sampler import sample_set_shard

sys.stderr = open(snakemake.log[0], "w")
sample_set_shard(
    Path(snakemake.params.checkpoint),
    Path(snakemake.output[0]),
    work_dir=Path(snakemake.params.work_dir),
    config=snakemake.params.settings,
    sample_set=snakemake.wildcards.sample_set,
    checkpoint_label=snakemake.wildcards.ckpt,
    shard_index=int(snakemake.wildcards.shard),
    provenance=provenance(snakemake.config),
)
