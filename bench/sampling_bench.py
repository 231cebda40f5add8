"""Sampling throughput, network evaluations per sampler, and Zarr write throughput.

Questions answered in this one process:
1. What does `radsynth.sample.denoising.sample_batch` cost over the bare UNet forwards it makes? Its
extra
   work is the per-image generators (initial noise and every stochastic step's noise drawn image
   by image), the scheduler's step and the uint8 conversion.
2. How many network evaluations and how much time does each sampler take per image? The paper ran
   1,000-step DDPM; DDIM and DPM-Solver++ are the fast alternatives radsynth offers.
3. How fast are the Zarr writes of a finished batch against the plain `np.save` of its bytes?
4. Whether fast samplers match 1,000-step DDPM in FID is measured by bench/fid_bench.py.

The model is the demo preset, randomly initialised: speed does not depend on the weights, and a
trained checkpoint is not needed to time the loop. The machine's 2 cores are shared with other
work that slows compute by up to 10x in bursts, so subject and baseline alternate step by step
(or batch by batch) and ratios are medians over pairs taken back to back.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
import zarr
from bench_common import torch_threads

from radsynth.demo.phantom import render_phantom, sample_params
from radsynth.sample.denoising import sample_batch
from radsynth.sample.schedulers import make_sampler_scheduler
from radsynth.sample.seeds import image_seed
from radsynth.sample.work_store import ShardRequest, _create_work_store, write_batch
from radsynth.train.model import build_unet, count_parameters
from radsynth.train.settings import RunSettings, run_settings_from_dict

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "config" / "config.yaml"

BATCH = 16
LOOP_STEPS = (
    50  # DDPM steps of the loop-overhead figure (set_timesteps(50) on the 1,000-step schedule)
)
LOOP_BATCHES = 4
SAMPLER_ROUNDS = 3
#: (sampler, steps, steps actually run): DDPM 1,000 is timed at 50 steps and scaled, since its
#: cost per step does not depend on the number of steps and 1,000 steps take about 2 minutes a
#: batch here.
SAMPLERS = (("ddpm", 1000, 50), ("ddim", 50, 50), ("dpmsolver++", 20, 20), ("dpmsolver++", 25, 25))
#: One intra-op thread: with 2 on the 2 shared cores, a forward took 3-20x longer, erratically,
#: whenever other work held a core (measured: 60-2,200 ms against 80-140 ms with one thread).
TORCH_THREADS = 1
WRITE_SIDE = 256  # the paper's image size
WRITE_BATCHES = 32  # 32 MiB per content type


def load_settings(config: Path) -> RunSettings:
    sections = yaml.safe_load(config.read_text())
    return run_settings_from_dict(
        {key: sections[key] for key in ("model", "diffusion", "training")}
    )


def random_unet(settings: RunSettings) -> torch.nn.Module:
    """The demo U-Net with seeded random weights, in eval mode as `sample_shard` puts it."""
    torch.manual_seed(0)
    return build_unet(settings.model).eval()


def seeds(first: int, n: int) -> list[int]:
    return [image_seed(0, "bench", first + i) for i in range(n)]


# ----------------------------------------------------------------------------------------------
# Loop overhead: sample_batch against its own forwards repeated bare


@dataclass
class PairedForwards:
    """Stands in for the UNet inside `sample_batch`: each call makes the real forward, then the same
    forward again (same batch, same timestep) as the bare baseline, timed on its own.

    Pairing every sampling step with a bare forward taken right after it puts both under the same
    load from other work. sample_batch's own time is its wall time minus the baseline forwards.
    With `paired` False it only counts the network evaluations.
    """

    unet: torch.nn.Module
    paired: bool = True
    calls: int = 0
    bare_s: list[float] = field(default_factory=list)

    @property
    def channels(self) -> int:
        return self.unet.channels

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def __call__(self, sample: torch.Tensor, timestep: Any) -> Any:
        output = self.unet(sample, timestep)
        self.calls += 1
        if self.paired:
            start = time.perf_counter()
            self.unet(sample, timestep)
            self.bare_s.append(time.perf_counter() - start)
        return output


def timed_sample_batch(model: Any, scheduler: Any, steps: int, first_seed: int, size: int) -> float:
    """Wall seconds of one `sample_batch` call of BATCH images (fp32 CPU, x0 clamped, rounded)."""
    start = time.perf_counter()
    sample_batch(
        model,
        scheduler,
        seeds(first_seed, BATCH),
        steps=steps,
        image_size=size,
        device="cpu",
        quantization="round",
    )
    return time.perf_counter() - start


def loop_overhead_lines(
    settings: RunSettings, unet: torch.nn.Module, betas: torch.Tensor
) -> list[str]:
    size = settings.model.sample_size
    scheduler = make_sampler_scheduler(
        "ddpm",
        betas,
        prediction_type="v_prediction",
        clip_sample=True,
        num_train_timesteps=len(betas),
        solver_order=None,
    )
    timed_sample_batch(PairedForwards(unet, paired=False), scheduler, 2, 0, size)  # warm-up
    subject, bare = [], []
    for batch in range(LOOP_BATCHES):
        model = PairedForwards(unet)
        total = timed_sample_batch(model, scheduler, LOOP_STEPS, batch * BATCH, size)
        bare.append(sum(model.bare_s))
        subject.append(total - bare[-1])
    ratios = [b / s for b, s in zip(bare, subject)]
    per_image = statistics.median(subject) / BATCH
    return [
        f"sampling, demo model ({count_parameters(unet):,} params, {size} px, RANDOMLY "
        "INITIALISED), DDPM "
        f"{LOOP_STEPS} steps (set_timesteps({LOOP_STEPS})), batch {BATCH}, CPU fp32, "
        f"{LOOP_BATCHES} batches:",
        f"  bare UNet forwards (same batches and timesteps, each run right after its twin) "
        f"{BATCH * LOOP_STEPS / statistics.median(bare):7.1f} image-evals/s",
        f"  sample_batch {1 / per_image:6.2f} images/s = "
        f"{BATCH * LOOP_STEPS / statistics.median(subject):7.1f} "
        f"image-evals/s; ratio to bare {statistics.median(ratios):.3f} "
        f"(range {min(ratios):.3f}-{max(ratios):.3f} over {LOOP_BATCHES} paired batches)",
    ]


# ----------------------------------------------------------------------------------------------
# Samplers: evaluations per image and images/s


def full_length(scheduler: Any, steps: int) -> int:
    """Network evaluations of a run we only timed in part: one per timestep of the full schedule."""
    scheduler.set_timesteps(steps)
    return len(scheduler.timesteps)


def sampler_lines(settings: RunSettings, unet: torch.nn.Module, betas: torch.Tensor) -> list[str]:
    """Each sampler in turn, SAMPLER_ROUNDS rounds; speed ratios to DDPM 1,000 within each round."""
    size = settings.model.sample_size
    schedulers = {
        (name, steps): make_sampler_scheduler(
            name,
            betas,
            prediction_type="v_prediction",
            clip_sample=True,
            num_train_timesteps=len(betas),
            solver_order=2 if name == "dpmsolver++" else None,
        )
        for name, steps, _ in SAMPLERS
    }
    seconds: dict[tuple[str, int], list[float]] = {key: [] for key in schedulers}
    evaluations: dict[tuple[str, int], int] = {}
    for round_ in range(SAMPLER_ROUNDS):
        for name, steps, run_steps in SAMPLERS:
            model = PairedForwards(unet, paired=False)
            elapsed = timed_sample_batch(
                model, schedulers[name, steps], run_steps, round_ * BATCH, size
            )
            seconds[name, steps].append(elapsed * steps / run_steps)
            scaled = run_steps != steps
            evaluations[name, steps] = (
                full_length(schedulers[name, steps], steps) if scaled else model.calls
            )
    reference = seconds["ddpm", 1000]
    lines = [
        f"samplers (same model and batch {BATCH}; v-prediction, x0 clamped; {SAMPLER_ROUNDS} "
        "rounds):"
    ]
    for name, steps, run_steps in SAMPLERS:
        speed = [r / s for r, s in zip(reference, seconds[name, steps])]
        note = (
            f" (timed at {run_steps} steps, scaled x{steps // run_steps})"
            if run_steps != steps
            else ""
        )
        lines.append(
            f"  {name:<11} {steps:>4} steps: {evaluations[name, steps]:>4} network "
            "evaluations/image, "
            f"{BATCH / statistics.median(seconds[name, steps]):7.3f} images/s, "
            f"speed-up vs ddpm 1000 {statistics.median(speed):6.1f}x{note}"
        )
    return lines


# ----------------------------------------------------------------------------------------------
# Zarr writes


def radiograph_batch(n: int, side: int) -> np.ndarray:
    """Phantom lateral c-spine films as uint8: compressible like real (and sampled) radiographs."""
    rng = np.random.default_rng(0)
    films = [
        render_phantom(rng, sample_params(rng, min_side=side, max_side=side, negative=False)).image
        for _ in range(n)
    ]
    return np.round(np.stack(films) * 255).astype(np.uint8)


def noise_batch(n: int, side: int) -> np.ndarray:
    """Uniform noise: incompressible, the worst case for the Zarr codec."""
    return np.random.default_rng(0).integers(0, 256, (n, side, side), dtype=np.uint8)


def bench_request(n_images: int) -> ShardRequest:
    """A shard request for the store layout only: no model or sampler runs in this figure."""
    return ShardRequest(
        checkpoint="bench",
        sampler="ddpm",
        steps=1000,
        weights="online",
        clip_sample=True,
        quantization="round",
        prediction_type="v_prediction",
        base_seed=0,
        shard_index=0,
        first_global_index=0,
        n_images=n_images,
        batch_size=BATCH,
        image_size=WRITE_SIDE,
        model_dtype="torch.float32",
        model_sha256="-",
        betas_sha256="-",
        scheduler={},
    )


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dataclass
class WriteTimes:
    """Seconds per batch of each way of writing it (taken in turn, batch by batch)."""

    numpy: list[float] = field(default_factory=list)
    shard: list[float] = field(default_factory=list)
    chunk: list[float] = field(default_factory=list)
    raw_chunk: list[float] = field(default_factory=list)


def images_array(root: Path, name: str, compressed: bool) -> zarr.Array:
    """The images array alone, laid out as in a shard store, with zarr's default codec or none."""
    group = zarr.open_group(root / name, mode="w", zarr_format=3)
    shape = (WRITE_BATCHES * BATCH, WRITE_SIDE, WRITE_SIDE)
    extra = {} if compressed else {"compressors": None}
    return group.create_array(
        "images",
        shape=shape,
        chunks=(BATCH, WRITE_SIDE, WRITE_SIDE),
        dtype="uint8",
        fill_value=0,
        **extra,
    )


def timed(function: Any, *args: Any) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def write_batches(images: np.ndarray, root: Path) -> tuple[WriteTimes, int]:
    """Each batch written four ways in turn: np.save; sample_shard's batch write; and, to see where
    its time goes, the images chunk alone with the default codec (zstd) and uncompressed.

    The shard write is `radsynth.sample.work_store.write_batch` on a store made by
    `_create_work_store`: the very writes `sample_shard` makes per batch (images, seeds, global
    indices, checksum, done flag), without sampling time in the figure. Also returns the shard
    store's bytes on disk.
    """
    request = bench_request(WRITE_BATCHES * BATCH)
    work = root / "shard.zarr.partial"
    _create_work_store(work, request, provenance={"bench": "sampling"})
    group = zarr.open_group(work, mode="r+", zarr_format=3)
    chunk, raw_chunk = images_array(root, "chunk.zarr", True), images_array(root, "raw.zarr", False)
    (root / "npy").mkdir()
    times = WriteTimes()
    for batch in range(WRITE_BATCHES):
        start, stop = request.batch_range(batch)
        batch_seeds = request.seeds(start, stop)
        times.numpy.append(timed(np.save, root / "npy" / f"batch{batch:04d}.npy", images))
        times.shard.append(timed(write_batch, group, request, batch, images, batch_seeds))
        times.chunk.append(timed(chunk.__setitem__, slice(start, stop), images))
        times.raw_chunk.append(timed(raw_chunk.__setitem__, slice(start, stop), images))
    return times, directory_bytes(work)


def paired_speed(baseline: list[float], subject: list[float]) -> float:
    """Median over batches of baseline/subject time (= subject's speed relative to the baseline)."""
    return statistics.median(b / s for b, s in zip(baseline, subject))


def zarr_lines() -> list[str]:
    megabytes = BATCH * WRITE_SIDE * WRITE_SIDE / 1e6
    lines = [
        f"zarr writes, uint8 batches ({BATCH}, {WRITE_SIDE}, {WRITE_SIDE}) = {megabytes:.2f} MB, "
        f"{WRITE_BATCHES} batches, each written in turn by np.save and the zarr paths (no fsync in "
        "any):"
    ]
    for label, images in (
        ("phantom radiographs", radiograph_batch(BATCH, WRITE_SIDE)),
        ("uniform noise", noise_batch(BATCH, WRITE_SIDE)),
    ):
        with tempfile.TemporaryDirectory(prefix="radsynth-bench-zarr-") as tmp:
            times, stored = write_batches(images, Path(tmp))
        rate = {
            name: megabytes / statistics.median(getattr(times, name))
            for name in ("numpy", "shard", "chunk", "raw_chunk")
        }
        shard_ms = statistics.median(times.shard) * 1e3
        lines += [
            f"  {label}: np.save {rate['numpy']:.0f} MB/s; sample_shard batch write "
            f"{rate['shard']:.0f} MB/s "
            f"({shard_ms:.0f} ms/batch), ratio to np.save "
            f"{paired_speed(times.numpy, times.shard):.3f}; "
            f"store {stored / (megabytes * 1e6 * WRITE_BATCHES):.2f} x raw bytes",
            f"    where it goes: images chunk alone {rate['chunk']:.0f} MB/s with zstd, "
            f"{rate['raw_chunk']:.0f} MB/s "
            f"uncompressed; seeds, indices, checksum, done flag (4 small array writes) "
            f"{shard_ms - statistics.median(times.chunk) * 1e3:.0f} ms/batch",
        ]
    return lines


def run() -> list[str]:
    settings = load_settings(DEMO_CONFIG)
    unet = random_unet(settings)
    betas = settings.diffusion.betas()
    with torch_threads(TORCH_THREADS):
        return [
            f"sampling bench with {TORCH_THREADS} torch thread (see TORCH_THREADS in "
            "bench/sampling_bench.py)",
            *loop_overhead_lines(settings, unet, betas),
            *sampler_lines(settings, unet, betas),
            *zarr_lines(),
            "FID of the fast samplers against 1,000-step DDPM: see the fid bench "
            "(bench/fid_bench.py)",
        ]
