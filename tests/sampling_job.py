"""A sampling shard job in processes of its own, for tests/test_sampling_distributed.py: the
stage's call (`sample_set_shard`, as workflow/scripts/sample_shard.py makes it) with the arguments
a JSON file names, exiting with the job's status. Run with `python` or `accelerate launch`."""

import json
import sys
from pathlib import Path

from radsynth.sample.sampler import sample_set_shard

job = json.loads(Path(sys.argv[1]).read_text())
sys.exit(
    sample_set_shard(
        Path(job.pop("checkpoint_path")),
        Path(job.pop("out_store")),
        work_dir=Path(job.pop("work_dir")),
        progress=False,
        **job,
    )
)
