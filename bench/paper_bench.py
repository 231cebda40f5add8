"""The paper's network at the paper's size: seconds per training step and peak memory at 256 px.

For micro-batches of 1, 2 and 8 (the paper's), a fresh process trains config/csxa.yaml's network
(lucidrains' Unet, 35,705,089 parameters) at 256 px through `radsynth.train.loop.train` for
STEPS steps of 2 accumulated micro-batches (the paper's accumulation), float32 on this CPU (fp16
needs CUDA), without validation (the full-data run) and without saves before the last step.
Seconds per step are the loss log's wall times from step 2 to STEPS (the first step is warm-up);
peak memory is the process's peak RSS. A batch whose memory estimate
(`radsynth.core.resources.job_memory_mb`) exceeds the memory available now is not run: its line
gives the estimate, marked as extrapolated.

Then a GPU-memory estimate for the paper's batch (method in `gpu_estimate_lines`).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from radsynth.core.resources import TRAIN_ACTIVATION_BYTES, activation_units, job_memory_mb

REPO = Path(__file__).resolve().parents[1]
PAPER_CONFIG = REPO / "config" / "csxa.yaml"
BATCHES = (1, 2, 8)
#: Steps per measurement: step 1 warms up, steps 2..STEPS are timed.
STEPS = 3
#: One intra-op thread, as the other training benches (the 2 cores are shared with other work).
TORCH_THREADS = 1
#: Memory left to everything else when deciding whether a batch may run (MB).
HEADROOM_MB = 1500


def paper_config(batch: int) -> dict[str, Any]:
    """config/csxa.yaml with the micro-batch, the step count and CPU precision changed."""
    config = yaml.safe_load(PAPER_CONFIG.read_text())
    config["training"].update(
        batch_size=batch,
        num_steps=STEPS,
        checkpoint_every=STEPS,
        state_every=STEPS,
        mixed_precision="no",
    )
    return config


def available_mb() -> int:
    """MemAvailable of /proc/meminfo: what a new process may take without swapping or an OOM."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable line")


def measure(batch: int, folder: Path) -> dict[str, float]:
    """Run in a fresh process (`main`): train STEPS steps, return seconds/step and peak RSS."""
    import numpy as np
    import torch

    from radsynth.data.atlas import atlas_from_images, write_atlas
    from radsynth.train.checkpoint_io import LOSS_LOG, read_loss_log
    from radsynth.train.loop import train
    from radsynth.train.settings import run_settings_from_dict

    torch.set_num_threads(TORCH_THREADS)
    config = paper_config(batch)
    size = config["model"]["sample_size"]
    n_images = 2 * batch * config["training"]["gradient_accumulation_steps"]
    images = np.random.default_rng(0).integers(0, 256, (n_images, size, size), dtype=np.uint8)
    atlas = folder / "atlas.h5"
    write_atlas(atlas, atlas_from_images(images, [f"{i:07d}" for i in range(n_images)]))
    settings = run_settings_from_dict(
        {key: config[key] for key in ("model", "diffusion", "training")}
    )
    train(atlas, None, folder / "run", settings, provenance={"bench": "paper"}, progress=False)
    wall = read_loss_log(folder / "run" / LOSS_LOG)["wall_time_s"].to_numpy()
    return {
        "seconds_per_step": float(wall[STEPS - 1] - wall[0]) / (STEPS - 1),
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def batch_line(batch: int) -> str:
    config = paper_config(batch)
    need = job_memory_mb(config, "train")
    images = batch * config["training"]["gradient_accumulation_steps"]
    label = f"  batch {batch} ({images} images per step)"
    free = available_mb()
    if need + HEADROOM_MB > free:
        return (
            f"{label}: not run, {free:,} MB available; extrapolated peak {need:,} MB "
            "(radsynth.core.resources, fitted to batches 1, 2 and 4)"
        )
    with tempfile.TemporaryDirectory(prefix="radsynth-bench-paper-") as tmp:
        result = subprocess.run(
            [sys.executable, __file__, str(batch), tmp],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": str(TORCH_THREADS)},
        )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return (
        f"{label}: {figures['seconds_per_step']:.1f} s per step, "
        f"{figures['seconds_per_step'] / images:.2f} s per image; peak RSS "
        f"{figures['peak_mb']:,.0f} MB (estimate {need:,} MB)"
    )


def gpu_estimate_lines() -> list[str]:
    """Training memory on a GPU at the paper's micro-batch, with fp16 autocast: 4 float32 copies
    of the parameters that live through a step (weights, gradients, Adam's two moments) plus the
    EMA copy, and the activations kept for the backward pass at half the CPU's float32 bytes per
    image (autocast stores most of them in fp16). CUDA's context and cuDNN's workspaces come on
    top (about 1 GB)."""
    from radsynth.train.model import parameter_count
    from radsynth.train.settings import run_settings_from_dict

    config = yaml.safe_load(PAPER_CONFIG.read_text())
    model = config["model"]
    parameters = parameter_count(
        run_settings_from_dict(
            {key: config[key] for key in ("model", "diffusion", "training")}
        ).model
    )
    copy_mb = parameters * 4 / 2**20
    batch = config["training"]["batch_size"]
    per_image_mb = (
        TRAIN_ACTIVATION_BYTES[model["architecture"]]
        * model["sample_size"] ** 2
        * activation_units(model)
        / 2**20
        / 2
    )
    fixed_mb = 5 * copy_mb
    total_gb = (fixed_mb + batch * per_image_mb) / 1024
    return [
        f"GPU-memory estimate, paper network ({parameters:,} parameters), fp16 autocast, "
        f"micro-batch {batch} (not measured: no GPU here):",
        f"  weights + gradients + Adam m, v + EMA: 5 x {copy_mb:.0f} MB = {fixed_mb:,.0f} MB",
        f"  activations: {batch} x {per_image_mb:,.0f} MB (half the CPU's float32 "
        f"{2 * per_image_mb:,.0f} MB per 256 px image) = {batch * per_image_mb:,.0f} MB",
        f"  total about {total_gb:.1f} GB, plus about 1 GB of CUDA context and cuDNN workspace",
    ]


def run() -> list[str]:
    return [
        f"paper network at 256 px, radsynth's training loop, float32 on this CPU, "
        f"{TORCH_THREADS} torch thread, accumulation 2:",
        *[batch_line(batch) for batch in BATCHES],
        *gpu_estimate_lines(),
    ]


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]), Path(sys.argv[2]))))
