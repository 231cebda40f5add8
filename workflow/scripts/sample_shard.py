import sys
from pathlib import Path

from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance
from radsynth.sample.sampler import sample_set_shard
from radsynth.train.checkpoint_io import marker_checkpoint

with log_to(snakemake.log[0]):
    sample_set = snakemake.wildcards.sample_set
    status = sample_set_shard(
        marker_checkpoint(
            Path(snakemake.input.reached),
            snakemake.params.checkpoint * snakemake.config["training"]["checkpoint_every"],
        ),
        Path(snakemake.output[0]),
        work_dir=Path(snakemake.params.work_dir),
        config={
            "sampling": {**snakemake.params.sampling, "sets": {sample_set: snakemake.params.plan}}
        },
        sample_set=sample_set,
        checkpoint_label=snakemake.wildcards.ckpt,
        shard_index=int(snakemake.wildcards.shard),
        provenance=provenance(snakemake.config),
    )
# Outside the log's block: 75 (stopped by a signal, finished batches kept) asks for a resumed
# attempt and is no error to log.
sys.exit(status)
