"""`make bench`: every benchmark measured in this one run, printed as figures and ratios.

Benchmarks are kept out of the test suite: they measure, they do not assert."""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anatomy_bench  # noqa: E402
import audit_bench  # noqa: E402
import dag_bench  # noqa: E402
import fid_bench  # noqa: E402
import paper_bench  # noqa: E402
import preprocess_bench  # noqa: E402
import review_bench  # noqa: E402
import sampling_bench  # noqa: E402
import training_bench  # noqa: E402

BENCHMARKS = {
    "preprocess": preprocess_bench.run,
    "training": training_bench.run,
    "paper": paper_bench.run,
    "sampling": sampling_bench.run,
    "dag": dag_bench.run,
    "fid": fid_bench.run,
    "audit": audit_bench.run,
    "review": review_bench.run,
    "anatomy": anatomy_bench.run,
}


def main(selected: list[str]) -> int:
    print(
        f"# radsynth bench on {platform.node()}: {torch.get_num_threads()} torch threads, "
        f"{time.ctime()}"
    )
    for name, run in BENCHMARKS.items():
        if selected and name not in selected:
            continue
        for line in run():
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
