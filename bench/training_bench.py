"""Training throughput of the paper's network and checkpoint size.

Three questions, each answered by a figure measured in this one process:
1. What does `radsynth.train.loop.train` cost over the bare floor of the same optimisation (network
   forward, weighted v-loss, backward, grad clip, Adam)? Its extra work is the seeded
   per-micro-batch draws, accelerate's accumulation, EMA updates, the loss log and the history
   checkpoints and resume states; steps holding a save are reported apart from the rest.
2. How does it compare with the same network in lucidrains' own training step, what I-SynMed ran:
   `GaussianDiffusion(Unet(...), objective="pred_v", beta_schedule="sigmoid")` stepped as
   `Trainer.train` steps it (2 accumulated micro-batches of 8 images, each loss divided by 2, clip
   1.0, Adam (0.9, 0.99), the Trainer's EMA update) on images of the same atlas? Goal: radsynth's
   loop at least as fast.
3. How many bytes does one history checkpoint of the paper preset take, against I-SynMed's
   checkpoint? That decides the disk a 160,000-step run with 80 checkpoints needs.
4. How do 2 data-parallel processes (`accelerate launch`, gloo on this CPU, one thread each)
   scale against 1 process on the same global batch? Images/s of each, from the run's own loss
   log (steps without a save, after the first), and their ratio; 2 x 1 process's images/s would
   be perfect scaling. The 2 processes share this machine's 2 cores with each other and with
   whatever else runs, so the ratio is a floor for 2 GPUs, not a GPU figure.
5. Does torch.compile (`radsynth.core.compile.maybe_compile`) pay on this CPU? Seconds per bare
   step compiled against eager, and the first compiled step's compilation time.

Both training figures use the paper preset's network (lucidrains' Unet(dim=64, dim_mults=(1, 2, 4,
8)))
at 64 px instead of 256 px so that a step fits this CPU, fp32. The machine's 2 cores are shared
with other work, which slows steps by up to 10x in bursts, so baselines are interleaved with train()
step by step (see `StepInterleaver`) and ratios are medians over steps paired in time.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
import yaml
from bench_common import torch_threads
from denoising_diffusion_pytorch import GaussianDiffusion, Unet
from ema_pytorch import EMA

from radsynth.core.compile import maybe_compile
from radsynth.data.atlas import atlas_from_images, load_atlas, write_atlas
from radsynth.train.checkpoint_io import (
    LOSS_LOG,
    model_config_json,
    read_loss_log,
    save_history_checkpoint,
    save_state,
)
from radsynth.train.diffusion import make_tables, q_sample, v_target, weighted_v_loss_per_image
from radsynth.train.loop import train
from radsynth.train.model import build_unet, count_parameters
from radsynth.train.settings import RunSettings, run_settings_from_dict

REPO = Path(__file__).resolve().parents[1]
PAPER_CONFIG = REPO / "config" / "csxa.yaml"

#: The paper's network at a side this CPU trains at a few seconds per step (the paper: 256).
BENCH_SIDE = 64
#: 9 steps with a checkpoint + state every 4 put two saves (steps 4 and 8) inside the timed
#: intervals (they land in steps 5 and 9) and leave 6 paired steps without a save.
TRAIN_STEPS = 9
SAVE_EVERY = 4
REPEATS = 1
#: One intra-op thread: with 2 on the 2 shared cores, steps took 3-20x longer, erratically, whenever
#: other work held a core (a forward: 60-2,200 ms against 80-140 ms with one thread).
TORCH_THREADS = 1
ATLAS_IMAGES = (
    32  # a multiple of the micro-batch of 8: no short batch, so the same shapes as the floor
)

#: I-SynMed's checkpoint: lucidrains' Trainer saves the model, Adam (m and v per parameter), the EMA
#: wrapper (its EMA model and its own online copy), all float32, for Unet(dim=64, (1, 2, 4, 8)).
ISYNMED_PARAMETERS = 35_705_089
ISYNMED_CHECKPOINT_BYTES = 5 * ISYNMED_PARAMETERS * 4


def config_sections(
    config: Path, model: dict[str, Any], training: dict[str, Any]
) -> dict[str, Any]:
    """The model/diffusion/training sections of a config, with model and training keys
    overridden."""
    sections = yaml.safe_load(config.read_text())
    values = {key: sections[key] for key in ("model", "diffusion", "training")}
    values["model"] = {**values["model"], **model}
    values["training"] = {**values["training"], **training}
    return values


def load_settings(config: Path, model: dict[str, Any], training: dict[str, Any]) -> RunSettings:
    return run_settings_from_dict(config_sections(config, model, training))


def bench_settings() -> RunSettings:
    """The paper preset at BENCH_SIDE px, fp32 (fp16 needs CUDA), TRAIN_STEPS steps, a save every
    SAVE_EVERY."""
    return load_settings(
        PAPER_CONFIG,
        model={"sample_size": BENCH_SIDE},
        training={
            "num_steps": TRAIN_STEPS,
            "mixed_precision": "no",
            "checkpoint_every": SAVE_EVERY,
            "state_every": SAVE_EVERY,
        },
    )


def write_random_atlas(path: Path, n_images: int, size: int) -> None:
    """An atlas of uniform-noise images: training cost does not depend on the pixels."""
    images = np.random.default_rng(0).integers(0, 256, (n_images, size, size), dtype=np.uint8)
    write_atlas(path, atlas_from_images(images, [f"{i:07d}" for i in range(n_images)]))


# ----------------------------------------------------------------------------------------------
# Subjects and baselines


def bare_step_function(settings: RunSettings, *, compiled: bool = False) -> Callable[[], None]:
    """The floor: one optimizer step of the same model and optimisation on a fixed batch.

    Each call is `gradient_accumulation_steps` micro-batches of `batch_size` (forward, weighted
    v-loss divided by the accumulation, backward), then grad-norm clipping and Adam; nothing else.
    `compiled`: the network through torch.compile (`maybe_compile`).
    """
    training = settings.training
    size = settings.model.sample_size
    model = maybe_compile(build_unet(settings.model), compiled).train()
    optimizer = torch.optim.Adam(
        model.parameters(), lr=training.learning_rate, betas=training.adam_betas
    )
    tables = make_tables(settings.diffusion.betas())
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand((training.batch_size, 1, size, size), generator=generator) * 2 - 1
    noise = torch.randn(x0.shape, generator=generator)
    t = torch.randint(0, tables.num_timesteps, (training.batch_size,), generator=generator)

    def step() -> None:
        for _ in range(training.gradient_accumulation_steps):
            prediction = model(q_sample(tables, x0, noise, t), t)
            loss = weighted_v_loss_per_image(
                tables, prediction, v_target(tables, x0, noise, t), t
            ).mean()
            (loss / training.gradient_accumulation_steps).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), training.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()

    return step


def lucidrains_diffusion(settings: RunSettings) -> GaussianDiffusion:
    """The configured network built by lucidrains' package itself, in GaussianDiffusion as I-SynMed
    ran it."""
    model = settings.model
    torch.manual_seed(0)
    unet = Unet(
        dim=model.base_channels,
        dim_mults=model.channel_multipliers,
        channels=1,
        dropout=model.dropout,
        attn_dim_head=model.attention_head_dim,
        full_attn=model.attention_levels,
        flash_attn=True,
    )
    return GaussianDiffusion(
        unet,
        image_size=model.sample_size,
        timesteps=settings.diffusion.timesteps,
        objective="pred_v",
        beta_schedule="sigmoid",
    )


def lucidrains_step_function(settings: RunSettings, atlas: Path) -> Callable[[], None]:
    """One iteration of lucidrains' `Trainer.train` loop without its data loader, on the atlas'
    first
    micro-batches: per micro-batch loss / accumulation, `.item()`, backward; clip; Adam; EMA update.

    The EMA's update is bound now: `paired_train_run` patches `EMA.update` while train() runs.
    """
    training = settings.training
    diffusion = lucidrains_diffusion(settings).train()
    optimizer = torch.optim.Adam(
        diffusion.parameters(), lr=training.learning_rate, betas=training.adam_betas
    )
    ema = EMA(diffusion, beta=training.ema.decay, update_every=training.ema.update_every)
    update_ema = EMA.update
    images = (
        torch.from_numpy(load_atlas(atlas).images).float().div(255).unsqueeze(1)
    )  # lucidrains takes [0, 1]
    accumulation, batch = training.gradient_accumulation_steps, training.batch_size
    micro_batches = [images[j * batch : (j + 1) * batch] for j in range(accumulation)]

    def step() -> None:
        total_loss = 0.0
        for data in micro_batches:
            loss = diffusion(data) / accumulation
            total_loss += loss.item()
            loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), training.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
        update_ema(ema)

    return step


class StepInterleaver:
    """Stands in for `ema_pytorch.EMA.update`, which `train` calls once after every optimizer
    step, and runs one step of each baseline right after it.

    Other work on this shared 2-core machine slows steps by up to 10x in bursts of seconds, longer
    than a step but shorter than a run; pairing every train() step with baseline steps taken
    immediately after it puts both under the same load. train() step k is timed from the end of
    the baselines after step k - 1 to the end of step k's EMA update, so it holds everything
    train() does between steps (loss log, checkpoint and state of step k - 1) and nothing else.
    """

    def __init__(
        self, update_ema: Callable[..., None], baselines: dict[str, Callable[[], None]]
    ) -> None:
        self.update_ema = update_ema
        self.baselines = baselines
        self.train_s: list[float] = []  # steps 2..n
        self.baseline_s: dict[str, list[float]] = {
            name: [] for name in baselines
        }  # after steps 1..n
        self.first_call: float | None = None
        self.resumed: float | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.update_ema(*args, **kwargs)
        now = time.perf_counter()
        if self.resumed is None:
            self.first_call = now
        else:
            self.train_s.append(now - self.resumed)
        for name, step in self.baselines.items():
            start = time.perf_counter()
            step()
            self.baseline_s[name].append(time.perf_counter() - start)
        self.resumed = time.perf_counter()


@dataclasses.dataclass(frozen=True)
class PairedRun:
    """One train() call with its paired baseline steps (seconds; index i is train() step i + 2)."""

    train: np.ndarray
    baselines: dict[str, np.ndarray]
    setup_s: float  # train() call start to the end of step 1: atlas, accelerate, model init, step 1
    final_save_s: float  # after the last step: loss-log row and the final state


def paired_train_run(settings: RunSettings, atlas: Path, run_dir: Path) -> PairedRun:
    """A fresh full-data run (manifest None) of `settings.training.num_steps` interleaved steps."""
    baselines = {
        "bare": bare_step_function(settings),
        "lucidrains": lucidrains_step_function(settings, atlas),
    }
    interleaver = StepInterleaver(EMA.update, baselines)
    start = time.perf_counter()
    with mock.patch.object(EMA, "update", lambda ema: interleaver(ema)):
        train(atlas, None, run_dir, settings, provenance={"bench": "training"}, progress=False)
    end = time.perf_counter()
    return PairedRun(
        np.array(interleaver.train_s),
        {
            name: np.array(times[1:]) for name, times in interleaver.baseline_s.items()
        },  # step 1 unpaired
        interleaver.first_call - start,
        end - interleaver.resumed,
    )


def save_intervals(settings: RunSettings, n_steps: int) -> np.ndarray:
    """Mask over train() steps 2..n: True where the interval holds step k - 1's checkpoint or
    state."""
    training = settings.training
    previous = np.arange(1, n_steps)
    return (previous % training.checkpoint_every == 0) | (previous % training.state_every == 0)


# ----------------------------------------------------------------------------------------------
# Throughput


def interleaved_runs(settings: RunSettings) -> list[PairedRun]:
    """REPEATS train() calls with paired baselines."""
    with tempfile.TemporaryDirectory(prefix="radsynth-bench-train-") as tmp:
        atlas = Path(tmp) / "atlas.h5"
        write_random_atlas(atlas, ATLAS_IMAGES, settings.model.sample_size)
        bare_step_function(settings)()  # warm-up: first-call allocations and kernel selection
        return [
            paired_train_run(settings, atlas, Path(tmp) / f"run{repeat}")
            for repeat in range(REPEATS)
        ]


def paired_ratio(baseline: np.ndarray, subject: np.ndarray) -> str:
    """Median and interquartile range of baseline/subject time over paired steps (= subject/baseline
    speed)."""
    ratios = baseline / subject
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    return f"{median:.3f} (IQR {q1:.3f}-{q3:.3f}, {len(ratios)} paired steps)"


def throughput_lines(settings: RunSettings, runs: list[PairedRun]) -> list[str]:
    """Steps/s from median step times; ratios over steps paired in time."""
    training, model = settings.training, settings.model
    saves = save_intervals(settings, TRAIN_STEPS)
    train_s = np.concatenate([run.train for run in runs])
    bare_s = np.concatenate([run.baselines["bare"] for run in runs])
    quiet = np.tile(~saves, len(runs))
    whole = [run.baselines["bare"].sum() / run.train.sum() for run in runs]
    extra = train_s[~quiet] - bare_s[~quiet] * np.median(train_s[quiet] / bare_s[quiet])
    lines = [
        f"training, paper network (model.architecture {model.architecture}, "
        f"{count_parameters(build_unet(model)):,} params) at {model.sample_size} px, "
        f"{training.batch_size} x "
        f"{training.gradient_accumulation_steps} images/step, CPU fp32: {len(runs)} x train() of "
        f"{TRAIN_STEPS} "
        "steps, each step paired with a bare step and a lucidrains Trainer step run right after "
        "it",
        "  bare loop (fwd + v-loss + bwd, clip, Adam; one fixed batch) "
        f"{1 / np.median(bare_s):6.3f} steps/s",
        f"  train() steps without saves {1 / np.median(train_s[quiet]):6.3f} steps/s, "
        f"ratio to bare {paired_ratio(bare_s[quiet], train_s[quiet])}",
        f"  train() loop incl. a checkpoint + state every {training.checkpoint_every} steps: ratio "
        "to bare "
        f"{statistics.median(whole):.3f} (sum of paired step times, median over runs)",
        f"  where the rest goes: each checkpoint + state save {np.median(extra) * 1e3:.0f} ms "
        f"(= {np.median(extra) / np.median(bare_s):.1f} bare steps); once per job: setup + step 1 "
        f"{statistics.median(run.setup_s for run in runs):.1f} s, final state "
        f"{statistics.median(run.final_save_s for run in runs):.2f} s",
    ]
    return lines + lucidrains_lines(settings, runs, bare_s, train_s, quiet)


def lucidrains_lines(
    settings: RunSettings,
    runs: list[PairedRun],
    bare_s: np.ndarray,
    train_s: np.ndarray,
    quiet: np.ndarray,
) -> list[str]:
    """lucidrains' Trainer step against radsynth's loop: the same network, 16 images per optimizer
    step."""
    lucid_s = np.concatenate([run.baselines["lucidrains"] for run in runs])
    lucid_params = count_parameters(lucidrains_diffusion(settings).model)
    version = importlib.metadata.version("denoising-diffusion-pytorch")
    return [
        f"  lucidrains {version} Trainer step (GaussianDiffusion pred_v sigmoid on its Unet, "
        f"{lucid_params:,} "
        f"params; 2 x 8 images, clip, Adam, EMA) {1 / np.median(lucid_s):6.3f} steps/s",
        "    speed ratio radsynth train() / lucidrains Trainer step "
        f"{paired_ratio(lucid_s[quiet], train_s[quiet])}"
        f" (>= 1: radsynth's loop at least as fast)",
        f"    speed ratio radsynth bare / lucidrains Trainer step {paired_ratio(lucid_s, bare_s)}",
    ]


# ----------------------------------------------------------------------------------------------
# Checkpoint bytes


def filled_adam(model: torch.nn.Module) -> torch.optim.Adam:
    """An Adam whose state exists (m and v per parameter), made with zero gradients, no forward
    pass."""
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-5, betas=(0.9, 0.99))
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    optimizer.zero_grad()
    return optimizer


def checkpoint_bytes_lines() -> list[str]:
    """Bytes of the paper preset's history checkpoint (the file kept every 2,000 steps) and resume
    state.

    Written through the same functions `train` uses: `save_history_checkpoint` for the history
    file and `save_state` with the parts `_save_run_state` passes for the resume state.
    """
    settings = load_settings(PAPER_CONFIG, model={}, training={})
    torch.manual_seed(0)
    online = build_unet(settings.model)
    ema = copy.deepcopy(online).requires_grad_(False)
    params = count_parameters(online)
    metadata = {"step": "2000", "checkpoint": "1", "model_config": model_config_json(online)}
    derivation = f"5 x {ISYNMED_PARAMETERS:,} params x 4 B = {ISYNMED_CHECKPOINT_BYTES:,} B"
    lines = [
        f"checkpoint bytes, paper preset ({params:,} params; I-SynMed checkpoint = model + Adam m, "
        "v + "
        f"EMA model + EMA's online copy = {derivation}):"
    ]
    with tempfile.TemporaryDirectory(prefix="radsynth-bench-ckpt-") as tmp:
        for dtype in (settings.training.checkpoint_dtype, "float16"):
            nbytes = save_history_checkpoint(
                Path(tmp) / f"{dtype}.safetensors", online, ema, dtype, metadata
            )
            label = "as configured" if dtype == settings.training.checkpoint_dtype else "option"
            lines.append(
                f"  history checkpoint (online + EMA, {dtype}, {label}): {nbytes:,} B, "
                f"ratio to I-SynMed {nbytes / ISYNMED_CHECKPOINT_BYTES:.3f}"
            )
        parts = {
            "online.safetensors": online.state_dict(),
            "ema.safetensors": ema.state_dict(),
            "optimizer.pt": filled_adam(online).state_dict(),
        }
        folder = save_state(Path(tmp) / "run", 2000, parts, {"identity": "bench"})
        state_bytes = sum(path.stat().st_size for path in folder.iterdir())
    lines.append(
        f"  resume state (online + EMA + Adam, float32; only the latest is kept): {state_bytes:,} "
        "B, "
        f"ratio {state_bytes / ISYNMED_CHECKPOINT_BYTES:.3f}"
    )
    return lines


# ----------------------------------------------------------------------------------------------
# Data-parallel scaling

#: Steps of each scaling run: step 1 (gloo's and the allocator's warm-up) and the last (its
#: checkpoint and state) are left out of the timing.
SCALING_STEPS = 6


def scaling_sections() -> dict[str, Any]:
    """The paper preset at BENCH_SIDE px, fp32, its global batch of 8 x 2 micro-batches, one save
    at the last step."""
    return config_sections(
        PAPER_CONFIG,
        model={"sample_size": BENCH_SIDE},
        training={
            "num_steps": SCALING_STEPS,
            "mixed_precision": "no",
            "checkpoint_every": SCALING_STEPS,
            "state_every": SCALING_STEPS,
        },
    )


def images_per_second(processes: int, atlas: Path, folder: Path) -> float:
    """Training images/s of a job on `processes` processes (radsynth.train.launch, one thread
    each), over steps 2..SCALING_STEPS - 1 of its loss log."""
    sections = scaling_sections()
    request = folder / "request.json"
    request.write_text(
        json.dumps(
            {
                "atlas_h5": str(atlas),
                "manifest_csv": None,
                "runs_root": str(folder / "runs"),
                "config": sections,
                "marker_json": str(folder / "marker.json"),
                "until_step": None,
                "max_wall_time_s": None,
                "provenance": {"bench": "training scaling"},
            }
        )
    )
    subprocess.run(
        [sys.executable, "-m", "radsynth.train.launch", "job", str(processes), str(request)],
        check=True,
        capture_output=True,
        env={**os.environ, "OMP_NUM_THREADS": str(TORCH_THREADS)},
    )
    (log_path,) = (folder / "runs").glob(f"*/{LOSS_LOG}")
    wall = read_loss_log(log_path)["wall_time_s"].to_numpy()
    training = sections["training"]
    images = (SCALING_STEPS - 2) * training["batch_size"] * training["gradient_accumulation_steps"]
    return images / float(wall[SCALING_STEPS - 2] - wall[0])


def scaling_lines() -> list[str]:
    with tempfile.TemporaryDirectory(prefix="radsynth-bench-scaling-") as tmp:
        atlas = Path(tmp) / "atlas.h5"
        write_random_atlas(atlas, ATLAS_IMAGES, BENCH_SIDE)
        rates = {}
        for processes in (1, 2):
            (Path(tmp) / str(processes)).mkdir()
            rates[processes] = images_per_second(processes, atlas, Path(tmp) / str(processes))
    speedup = rates[2] / rates[1]
    return [
        f"data-parallel scaling, paper network at {BENCH_SIDE} px, global batch 8 x 2, "
        f"{TORCH_THREADS} thread per process (accelerate launch, gloo on the CPU):",
        f"  1 process: {rates[1]:.2f} images/s; 2 processes: {rates[2]:.2f} images/s",
        f"  ratio 2/1: {speedup:.2f} (scaling efficiency {speedup / 2:.0%}; the 2 processes share "
        "this machine's 2 cores with each other and with any other load)",
    ]


#: Steps of each of the eager and the compiled bare step; the first compiled step compiles.
COMPILE_STEPS = 6


def compile_lines(settings: RunSettings) -> list[str]:
    """torch.compile against eager (`training.compile`'s question) on the bare step: median
    seconds per step over steps 2.. of each, run one after the other (not interleaved: the
    shared cores make the ratio noisy), and the first compiled step's extra time (compilation)."""
    durations = {}
    with torch_threads(TORCH_THREADS):
        for compiled in (False, True):
            step = bare_step_function(settings, compiled=compiled)
            durations[compiled] = []
            for _ in range(COMPILE_STEPS):
                start = time.perf_counter()
                step()
                durations[compiled].append(time.perf_counter() - start)
    eager = statistics.median(durations[False][1:])
    compiled = statistics.median(durations[True][1:])
    return [
        f"torch.compile (inductor, CPU), paper network at {BENCH_SIDE} px, bare step:",
        f"  eager {eager:.2f} s/step, compiled {compiled:.2f} s/step: ratio compiled/eager "
        f"{compiled / eager:.2f}; first compiled step {durations[True][0]:.0f} s (compiling)",
    ]


def run() -> list[str]:
    settings = bench_settings()
    with torch_threads(TORCH_THREADS):
        runs = interleaved_runs(settings)
    return [
        f"training bench with {TORCH_THREADS} torch thread (see TORCH_THREADS in "
        "bench/training_bench.py)",
        *throughput_lines(settings, runs),
        *checkpoint_bytes_lines(),
        *scaling_lines(),
        *compile_lines(settings),
    ]
