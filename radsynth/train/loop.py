"""DDPM training as I-SynMed ran lucidrains' `Trainer`, rebuilt on accelerate around either network
(`radsynth.train.model`: lucidrains' own Unet or a diffusers UNet2DModel), with the validation
loss, weights-only checkpoint history, run identity and exact resume that I-SynMed lacks.

Reproduced from lucidrains' Trainer (denoising_diffusion_pytorch v2.x) and ema_pytorch (0.8.x):
Adam(lr, betas=(0.9, 0.99)), no LR schedule, gradient-norm clip 1.0, optional fp16 autocast with a
gradient scaler, micro-batches of 8 accumulated twice with each micro-batch loss divided by 2,
random horizontal flips (p = 0.5), a shuffling loader that cycles epochs and ends each epoch with a
short batch (DataLoader drop_last=False), and `ema_pytorch.EMA` itself, built as the Trainer builds
it and updated once after every optimizer step (`radsynth.train.ema`). The loss is lucidrains'
weighted v-loss (`radsynth.train.diffusion`).

Randomness is a pure function of (seed, position), never a stream carried across steps: micro-batch
m (= step x accumulation + j) draws its flips, timesteps and noise from a generator seeded by
(seed, m), reseeds the global RNG from (seed, m) for dropout, and takes its images from epoch
m // batches_per_epoch's seeded permutation. Validation image i always gets the timestep and noise
seeded by (seed, atlas index i), so validation losses compare across checkpoints. A restored run
therefore needs no RNG state: resuming from step s repeats exactly what the uninterrupted run did
after s on the CPU (same thread count and library versions); on CUDA, nondeterministic kernels
(cuDNN convolution backward) make a resumed run statistically, not bitwise, equal.

Run directory:
- `checkpoints/step{step:06d}.safetensors` every `checkpoint_every` steps: online and EMA weights
  only (keys `online.*`, `ema.*`, stored as `checkpoint_dtype`), metadata with step, checkpoint
  number, model config, settings and provenance; `checkpoints/index.csv` lists them.
- `state/step{step:06d}/`: the full training state of the latest resume point only (online
  weights in float32, the EMA's state_dict: its float32 weights and its `step` and `initted`
  counters, optimizer, gradient scaler, step, data position, wall time, run identity, file hashes).
  It is written to a temporary directory and renamed into place; older states are removed only
  afterwards, so a kill at any moment leaves at least one complete state (or none yet). A state
  resumes only a run of the same identity (`radsynth.train.identity`: data and result settings).
- `loss_log.csv`: one row per step (val columns filled at checkpoints); `train.log`: messages.
- `identity.json` (from `train_job`, which names the folder `runs_root/<identity prefix>`): the
  identity, its input digests and result settings.

Runs longer than a cluster's time limit: each job calls `train` with the same arguments (and
optionally `until_step` or `max_wall_time_s`); it resumes from the latest state, trains until the
step or budget is reached, saves a state and returns `TrainResult(finished=False)`. The next job
continues. A job sent SIGTERM (SLURM's time limit, `scancel`, preemption) saves its state at the
next step boundary and stops the same way, losing at most the step under way; a killed job loses
at most `state_every` steps, which are recomputed identically; rows and checkpoints after the
restored step are dropped first. `train_job` wraps this for the workflow: it picks the run folder
by identity and writes a marker of the step reached.

Data parallel (`accelerate launch`, radsynth.train.launch): every process draws the whole global
micro-batch of `training.batch_size` images and takes its rows of it (`process_rows`); its loss is
its rows' sum scaled so that DDP's average of the processes' gradients is the gradient of the
global batch mean. The data order and every draw stay functions of (seed, step), so a run on N
processes follows the 1-process run up to the order of floating-point sums, and a state written
by one process count resumes on any other. Each process keeps the same online weights, optimizer
and EMA (the same updates of the same all-reduced gradients); the main process alone writes the
run's files. Dropout (0 in both presets) draws per process, so with dropout > 0 runs on different
process counts agree only statistically. Without CUDA the processes run on the CPU with gloo.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from accelerate import Accelerator
from ema_pytorch import EMA
from tqdm import tqdm

from radsynth.core.atomic import read_json_object, write_json_atomic
from radsynth.core.compile import maybe_compile
from radsynth.core.device import on_cpu, process_state
from radsynth.core.preemption import EXIT_RESUME_LATER, stop_signals
from radsynth.core.provenance import config_hash
from radsynth.core.seeds import STREAM_DROPOUT, STREAM_INIT, derived_seed, micro_batch_positions
from radsynth.core.settings.train import TrainingSettings
from radsynth.data.atlas import atlas_digest, load_atlas
from radsynth.data.split import Subsets, read_subsets
from radsynth.train.checkpoint_io import (
    CHECKPOINT_DIR,
    LOSS_LOG,
    add_index_row,
    checkpoint_filename,
    latest_state_dir,
    loss_log_row,
    model_config_json,
    reached_step,
    read_state,
    save_history_checkpoint,
    save_state,
    start_loss_log,
    truncate_history,
    truncate_loss_log,
    write_run_marker,
)
from radsynth.train.diffusion import (
    DiffusionTables,
    make_tables,
    q_sample,
    uint8_to_model_range,
    v_target,
    weighted_v_loss_per_image,
)
from radsynth.train.ema import build_ema
from radsynth.train.identity import (
    RESULT_SECTIONS,
    RunInputs,
    manifest_digest,
    result_settings,
    run_folder,
)
from radsynth.train.model import build_unet
from radsynth.train.seeds import NoiseDraws, micro_batch_draws, process_rows, validation_draws
from radsynth.train.settings import RunSettings, run_settings_from_dict

log = logging.getLogger(__name__)


def diffusion_loss_per_image(
    model: torch.nn.Module,
    tables: DiffusionTables,
    images: torch.Tensor,
    draws: NoiseDraws,
    device: torch.device,
) -> torch.Tensor:
    """lucidrains' weighted v-loss of each image (uint8 (B, H, W) in), flipping where drawn."""
    x0 = uint8_to_model_range(images.to(device)).unsqueeze(1)
    x0 = torch.where(draws.flips.to(device).view(-1, 1, 1, 1), x0.flip(-1), x0)
    t, noise = draws.timesteps.to(device), draws.noise.to(device)
    prediction = model(q_sample(tables, x0, noise, t), t)
    return weighted_v_loss_per_image(tables, prediction, v_target(tables, x0, noise, t), t)


@dataclass(frozen=True)
class TrainResult:
    step: int  # optimizer steps completed
    finished: bool  # True when training.num_steps is reached
    stopped_by: str | None  # why it stopped before its target step (budget or signal), else None


#: Signals that stop training at the next step boundary with a saved state: what SLURM sends at
#: the time limit (with `--signal`), on `scancel` and on preemption, KillWait seconds before
#: SIGKILL.
STOP_SIGNALS = (signal.SIGTERM,)


@dataclass
class _Run:
    """Everything one `train` call works on."""

    settings: RunSettings
    run_dir: Path
    accelerator: Accelerator
    model: torch.nn.Module  # prepared by accelerate (DDP-wrapped on several GPUs)
    ema: EMA  # ema_pytorch.EMA of the unwrapped online model (`online`)
    optimizer: Any
    tables: DiffusionTables
    train_images: torch.Tensor  # uint8 (N, H, W) on the CPU
    val_images: torch.Tensor
    val_indices: np.ndarray
    logger: logging.Logger
    provenance: Mapping[str, str]
    wall_before_s: float = 0.0  # training wall time of earlier jobs
    job_start: float = dataclasses.field(default_factory=time.monotonic)
    identity: str = (
        ""  # the run identity its states are written and checked under (set by `_train_run`)
    )
    signalled: list[str] = dataclasses.field(default_factory=list)  # from stop_signals

    @property
    def online(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def wall_time_s(self) -> float:
        return self.wall_before_s + time.monotonic() - self.job_start


def _check_mixed_precision(training: TrainingSettings) -> None:
    """Refuse fp16 without CUDA rather than silently training with other numerics."""
    if training.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ValueError(
            "training.mixed_precision is 'fp16' (I-SynMed's --amp) but no CUDA device is "
            "available; fp16 autocast needs a GPU: set it to 'no' for CPU runs"
        )


def _check_sharding(training: TrainingSettings, n_train: int, world: int) -> None:
    """Every process needs at least one image of every micro-batch, the epoch's short one
    included."""
    short = n_train % training.batch_size
    if training.batch_size < world or 0 < short < world:
        raise ValueError(
            f"training.batch_size {training.batch_size} with {n_train} training images leaves a "
            f"batch smaller than the {world} processes"
        )


@contextlib.contextmanager
def _run_logger(run_dir: Path, enabled: bool) -> Iterator[logging.Logger]:
    """A logger writing to run_dir/train.log (main process only) for the duration of one call."""
    logger = logging.getLogger(f"radsynth.train.loop.{run_dir.resolve()}")
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(run_dir / "train.log") if enabled else logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        handler.close()


def _run_inputs(
    images: np.ndarray, source_names: list[str], subsets: Subsets | None, settings: RunSettings
) -> RunInputs:
    """The digests that make the run's identity (radsynth.train.identity); `subsets` None is the
    full run."""
    rows = (
        None if subsets is None else {"train": subsets.train.tolist(), "val": subsets.val.tolist()}
    )
    return RunInputs(
        atlas_digest=atlas_digest(np.ascontiguousarray(images), source_names),
        manifest_digest=manifest_digest(rows),
        result_settings_hash=config_hash(result_settings(settings.model_dump(mode="json"))),
    )


def _load_inputs(
    atlas_h5: Path, manifest_csv: Path | None, settings: RunSettings
) -> tuple[tuple[torch.Tensor, torch.Tensor, np.ndarray], RunInputs]:
    """The train images, val images and val atlas rows, and the run's input digests."""
    sample_size = settings.model.sample_size
    atlas = load_atlas(atlas_h5)
    images = atlas.images
    if (
        images.dtype != np.uint8
        or images.ndim != 3
        or images.shape[1:] != (sample_size, sample_size)
    ):
        raise ValueError(
            f"{atlas_h5}: /images is {images.dtype} {images.shape}, but model.sample_size "
            f"{sample_size} needs uint8 (N, {sample_size}, {sample_size})"
        )
    if len(images) == 0:
        raise ValueError(f"{atlas_h5}: the atlas holds no images to train on")
    manifest = None if manifest_csv is None else read_subsets(manifest_csv, atlas.source_names)
    inputs = _run_inputs(images, atlas.source_names, manifest, settings)
    subsets = (
        Subsets(np.arange(len(images)), np.array([], dtype=np.int64))
        if manifest is None
        else manifest
    )
    return (
        torch.from_numpy(images[subsets.train]),
        torch.from_numpy(images[subsets.val]),
        subsets.val,
    ), inputs


def _build_run(
    settings: RunSettings,
    images: tuple[torch.Tensor, torch.Tensor, np.ndarray],
    run_dir: Path,
    logger: logging.Logger,
    provenance: Mapping[str, str],
) -> _Run:
    """Accelerator, seeded model init, its EMA (built before `prepare`, as the Trainer builds
    it), Adam and the diffusion tables."""
    training = settings.training
    accelerator = Accelerator(
        mixed_precision=training.mixed_precision,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        cpu=on_cpu(),
    )
    _check_sharding(training, len(images[0]), accelerator.num_processes)
    torch.manual_seed(derived_seed(training.seed, STREAM_INIT, 0))
    online = build_unet(settings.model)
    ema = build_ema(online, training.ema).to(accelerator.device)
    maybe_compile(online, training.compile)  # after the EMA copy, which stays eager
    optimizer = torch.optim.Adam(
        online.parameters(), lr=training.learning_rate, betas=training.adam_betas
    )
    model, optimizer = accelerator.prepare(online, optimizer)
    tables = make_tables(settings.diffusion.betas()).to(accelerator.device)
    return _Run(
        settings, run_dir, accelerator, model, ema, optimizer, tables, *images, logger, provenance
    )


def _state_parts(run: _Run) -> dict[str, Any]:
    parts = {
        "online.safetensors": run.online.state_dict(),
        "ema.safetensors": run.ema.state_dict(),
        "optimizer.pt": run.optimizer.state_dict(),
    }
    if run.accelerator.scaler is not None:
        parts["scaler.pt"] = run.accelerator.scaler.state_dict()
    return parts


def _save_run_state(run: _Run, step: int) -> None:
    training = run.settings.training
    micro = step * training.gradient_accumulation_steps
    per_epoch = -(-len(run.train_images) // training.batch_size)
    info = {
        "identity": run.identity,
        "wall_time_s": run.wall_time_s(),
        "micro_batches_done": micro,
        "epoch": micro // per_epoch,
        "batch_in_epoch": micro % per_epoch,
        "randomness": "derived from (training.seed, micro-batch index); no RNG state needed",
        "num_processes": run.accelerator.num_processes,
        "provenance": dict(run.provenance),
    }
    folder = save_state(run.run_dir, step, _state_parts(run), info)
    run.logger.info("saved training state %s", folder)


def _load_ema_state(run: _Run, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """The EMA's weights and its step/initted buffers; a state from before ema_pytorch lacks the
    buffers."""
    try:
        run.ema.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(
            f"{path}: not an ema_pytorch.EMA state ({exc}); use a new run directory"
        ) from exc


def _restore(run: _Run) -> int:
    """Load the latest state (every process) and cut logs back to it (main); 0 for a fresh run."""
    folder = latest_state_dir(run.run_dir)
    main = run.accelerator.is_main_process
    if folder is None:
        if main:
            start_loss_log(run.run_dir / LOSS_LOG)
            shutil.rmtree(run.run_dir / CHECKPOINT_DIR, ignore_errors=True)
        run.logger.info("starting a new run in %s", run.run_dir)
        return 0
    info, parts = read_state(folder, run.identity)
    run.online.load_state_dict(parts["online.safetensors"])
    _load_ema_state(run, parts["ema.safetensors"], folder / "ema.safetensors")
    run.optimizer.load_state_dict(parts["optimizer.pt"])
    if run.accelerator.scaler is not None:
        run.accelerator.scaler.load_state_dict(parts["scaler.pt"])
    run.wall_before_s = float(info["wall_time_s"])
    if main:
        truncate_loss_log(run.run_dir / LOSS_LOG, info["step"])
        truncate_history(run.run_dir, info["step"])
    run.logger.info("resumed from %s at step %d", folder, info["step"])
    return int(info["step"])


def _optimizer_step(run: _Run, step: int) -> float:
    """Optimizer step `step` + 1: accumulated micro-batches, clipping, Adam; returns the mean
    loss (of every image of the global micro-batches, whichever process computed it)."""
    training, accelerator = run.settings.training, run.accelerator
    size = run.settings.model.sample_size
    loss_sums, batch_sizes = [], []
    for j in range(training.gradient_accumulation_steps):
        micro = step * training.gradient_accumulation_steps + j
        positions = micro_batch_positions(
            len(run.train_images), training.batch_size, training.seed, micro
        )
        draws = micro_batch_draws(
            training.seed,
            micro,
            len(positions),
            size,
            run.tables.num_timesteps,
            training.horizontal_flip,
        )
        rows = process_rows(len(positions), accelerator.process_index, accelerator.num_processes)
        torch.manual_seed(derived_seed(training.seed, STREAM_DROPOUT, micro))
        with accelerator.accumulate(run.model):
            with accelerator.autocast():
                images = run.train_images[torch.from_numpy(positions[rows])]
                loss_sum = diffusion_loss_per_image(
                    run.model, run.tables, images, draws.select(rows), accelerator.device
                ).sum()
            # DDP averages the processes' gradients: x processes / global batch makes that the
            # gradient of the global batch mean however the rows are split. backward divides by
            # gradient_accumulation_steps, as lucidrains does.
            accelerator.backward(loss_sum * (accelerator.num_processes / len(positions)))
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(run.model.parameters(), training.max_grad_norm)
            run.optimizer.step()
            run.optimizer.zero_grad()
        loss_sums.append(loss_sum.detach().float())
        batch_sizes.append(len(positions))
    global_sums = accelerator.reduce(torch.stack(loss_sums), "sum").cpu()
    return float((global_sums / torch.tensor(batch_sizes)).mean())


@torch.no_grad()
def validation_loss(run: _Run, model: torch.nn.Module) -> float:
    """Mean per-image weighted v-loss over the validation set with its fixed draws."""
    training, size = run.settings.training, run.settings.model.sample_size
    model.eval()
    total = 0.0
    for start in range(0, len(run.val_indices), training.val_batch_size):
        chunk = slice(start, start + training.val_batch_size)
        draws = validation_draws(
            training.seed, run.val_indices[chunk], size, run.tables.num_timesteps
        )
        with run.accelerator.autocast():
            losses = diffusion_loss_per_image(
                model, run.tables, run.val_images[chunk], draws, run.accelerator.device
            )
        total += float(losses.double().sum())
    model.train()
    return total / len(run.val_indices)


def _write_checkpoint(run: _Run, step: int, train_loss: float) -> tuple[float | None, float | None]:
    """Validation losses (split run), history checkpoint and its index row; returns the losses."""
    training = run.settings.training
    has_val = len(run.val_indices) > 0
    val = validation_loss(run, run.online) if has_val else None
    val_ema = validation_loss(run, run.ema.ema_model) if has_val else None
    number = step // training.checkpoint_every
    metadata = {
        "step": str(step),
        "checkpoint": str(number),
        "model_config": model_config_json(run.online),
        "settings": json.dumps(run.settings.model_dump(mode="json"), sort_keys=True),
        "provenance": json.dumps(dict(run.provenance), sort_keys=True),
    }
    nbytes = save_history_checkpoint(
        run.run_dir / CHECKPOINT_DIR / checkpoint_filename(step),
        run.online,
        run.ema.ema_model,
        training.checkpoint_dtype,
        metadata,
    )
    add_index_row(run.run_dir, step, number, nbytes, train_loss, val, val_ema)
    run.logger.info(
        "step %d: checkpoint %d (%d bytes) val_loss=%s val_loss_ema=%s",
        step,
        number,
        nbytes,
        val,
        val_ema,
    )
    return val, val_ema


def _finish_step(run: _Run, step: int, train_loss: float, log: TextIO, save: bool) -> None:
    """Main process: checkpoint and validation when due, the loss-log row, then the state if
    asked."""
    training = run.settings.training
    val, val_ema = (
        _write_checkpoint(run, step, train_loss)
        if step % training.checkpoint_every == 0
        else (None, None)
    )
    log.write(
        loss_log_row(
            step, train_loss, val, val_ema, run.optimizer.param_groups[0]["lr"], run.wall_time_s()
        )
    )
    log.flush()
    if save:
        _save_run_state(run, step)


def _stop_reason(run: _Run, max_wall_time_s: float | None) -> str | None:
    """Why the job stops after this step (a stop signal in any process, or the spent budget),
    agreed by all processes through one all-reduce so they stop at the same step."""
    spent = max_wall_time_s is not None and time.monotonic() - run.job_start > max_wall_time_s
    flags = torch.tensor([float(bool(run.signalled)), float(spent)], device=run.accelerator.device)
    signalled, out_of_time = (run.accelerator.reduce(flags, "sum") > 0).tolist()
    if signalled:
        return f"{run.signalled[0] if run.signalled else 'a stop signal'} received"
    return f"wall-time budget of {max_wall_time_s} s spent" if out_of_time else None


def _train_loop(
    run: _Run, start: int, stop: int, max_wall_time_s: float | None, progress: bool
) -> tuple[int, str | None]:
    """Train steps start+1..stop; returns the step reached and why it stopped early (or None)."""
    main = run.accelerator.is_main_process
    step, stopped_by = start, None
    log_file = open(run.run_dir / LOSS_LOG, "a") if main else contextlib.nullcontext()
    bar = tqdm(
        total=stop, initial=start, desc="train", file=sys.stderr, disable=not (progress and main)
    )
    with log_file as log, bar:
        while step < stop:
            train_loss = _optimizer_step(run, step)
            step += 1
            run.ema.update()  # once per optimizer step, after it, as the Trainer calls it
            stopped_by = _stop_reason(run, max_wall_time_s) if step < stop else None
            save = step % run.settings.training.state_every == 0 or step == stop or stopped_by
            if main:
                _finish_step(run, step, train_loss, log, bool(save))
            run.accelerator.wait_for_everyone()
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.4f}")
            if stopped_by:
                run.logger.info("%s at step %d; its state is saved", stopped_by, step)
                break
    return step, stopped_by


def _target_step(training: TrainingSettings, until_step: int | None) -> int:
    """The step to train to: `until_step`, by default training.num_steps."""
    stop = training.num_steps if until_step is None else until_step
    if not 1 <= stop <= training.num_steps:
        raise ValueError(
            f"until_step {until_step} is outside 1..training.num_steps ({training.num_steps})"
        )
    return stop


def _train_run(
    images: tuple[torch.Tensor, torch.Tensor, np.ndarray],
    run_dir: Path,
    settings: RunSettings,
    identity: str,
    stop: int,
    *,
    provenance: Mapping[str, str],
    max_wall_time_s: float | None,
    progress: bool,
) -> TrainResult:
    """Train (or resume) the run in `run_dir`, whose states carry `identity`, up to step `stop`."""
    _check_mixed_precision(settings.training)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _run_logger(run_dir, enabled=process_state().is_main_process) as logger:
        run = _build_run(settings, images, run_dir, logger, provenance)
        run.identity = identity
        with stop_signals(STOP_SIGNALS) as run.signalled:
            start = _restore(run)
            run.job_start = time.monotonic()
            step, stopped_by = (
                _train_loop(run, start, stop, max_wall_time_s, progress)
                if start < stop
                else (start, None)
            )
        logger.info("stopped at step %d of %d", step, settings.training.num_steps)
    return TrainResult(step, step == settings.training.num_steps, stopped_by)


def train(
    atlas_h5: Path,
    manifest_csv: Path | None,
    run_dir: Path,
    settings: RunSettings,
    *,
    provenance: Mapping[str, str],
    until_step: int | None = None,
    max_wall_time_s: float | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or resume) the DDPM in `run_dir` up to `until_step` (default: training.num_steps).

    `manifest_csv` None trains on every atlas image without validation (the full-data run); a
    manifest must have both 'train' and 'val' rows (the split run). `max_wall_time_s` ends the
    job cleanly with a saved state once this job has trained that long, as SIGTERM does at the
    next step boundary. A state in `run_dir`
    written for other inputs or result settings is refused (`train_job` picks the folder).
    """
    stop = _target_step(settings.training, until_step)
    images, inputs = _load_inputs(
        Path(atlas_h5), None if manifest_csv is None else Path(manifest_csv), settings
    )
    return _train_run(
        images,
        Path(run_dir),
        settings,
        inputs.identity(),
        stop,
        provenance=provenance,
        max_wall_time_s=max_wall_time_s,
        progress=progress,
    )


# ----------------------------------------------------------------------------------------------
# One scheduler job

#: A run folder's record of its identity and inputs, so a run on other inputs can name it.
RUN_RECORD = "identity.json"


def _previous_runs(run_dir: Path, inputs: RunInputs) -> list[str]:
    """The other run folders beside `run_dir` that trained (hold a complete state), each with the
    inputs in which it differs; a folder a failed start left without any state is no run."""
    found = []
    for path in sorted(run_dir.parent.glob(f"*/{RUN_RECORD}")):
        if path.parent != run_dir and reached_step(path.parent) > 0:
            differing = inputs.differing(read_json_object(path, "run record").get("inputs", {}))
            found.append(f"{path.parent} (other {', '.join(differing)})")
    return found


def _open_run_folder(runs_root: Path, inputs: RunInputs, settings: RunSettings) -> Path:
    """The folder of the run with these inputs, recorded on first use. A first use beside other
    run folders means the inputs changed: it is logged, and the other folders are kept."""
    identity = inputs.identity()
    run_dir = run_folder(runs_root, identity)
    record = run_dir / RUN_RECORD
    if record.is_file():
        recorded = read_json_object(record, "run record").get("identity")
        if recorded != identity:
            raise ValueError(
                f"{record}: records run identity {recorded!r}, not {identity!r}; "
                "move the folder away"
            )
        log.info("run folder %s (identity %s)", run_dir, identity)
        return run_dir
    previous = _previous_runs(run_dir, inputs)
    if previous:
        log.info(
            "inputs changed: training a new run in %s from step 0; previous run folder(s), "
            "kept until you remove them: %s",
            run_dir,
            "; ".join(previous),
        )
    else:
        log.info("training a new run in %s", run_dir)
    described = {
        "identity": identity,
        "inputs": dataclasses.asdict(inputs),
        "result_settings": result_settings(settings.model_dump(mode="json")),
    }
    write_json_atomic(record, described)
    return run_dir


def _check_checkpoint_kept(
    run_dir: Path, target: int, reached: int, training: TrainingSettings, key: str
) -> None:
    """A run already past `target` stands for step `target` only through its history checkpoint
    there."""
    path = run_dir / CHECKPOINT_DIR / checkpoint_filename(target)
    if target % training.checkpoint_every != 0 or not path.is_file():
        raise ValueError(
            f"{key} {target} is below step {reached}, which run {run_dir} already reached, and "
            f"the run has no checkpoint of step {target} (one every training.checkpoint_every = "
            f"{training.checkpoint_every} steps): ask for a step with a checkpoint, or remove the "
            "run folder to retrain"
        )


def train_job(
    atlas_h5: Path,
    manifest_csv: Path | None,
    runs_root: Path,
    config: Mapping[str, Any],
    marker_json: Path,
    *,
    until_step: int | None = None,
    max_wall_time_s: float | None,
    provenance: Mapping[str, str],
) -> int:
    """One cluster job of a training run: train until `until_step` (default training.num_steps) or
    out of time.

    The run lives in `runs_root/<identity prefix>` (radsynth.train.identity), so other data or
    result settings train afresh in their own folder while a larger training.num_steps continues
    the run. Returns 0 and writes `marker_json` (what downstream rules depend on) once the run
    reached `until_step`, at once when it had already passed it and kept that step's checkpoint;
    returns EXIT_RESUME_LATER when out of time or stopped by SIGTERM, so the scheduler's retry (or
    the user's next `snakemake` call) resumes from the saved state. Under `accelerate launch`
    every process calls it; the main process alone records the run folder and writes the marker.
    """
    settings = run_settings_from_dict({key: config[key] for key in RESULT_SECTIONS})
    target = _target_step(settings.training, until_step)
    images, inputs = _load_inputs(
        Path(atlas_h5), None if manifest_csv is None else Path(manifest_csv), settings
    )
    state = process_state()
    with state.main_process_first():  # the others find the folder the main process recorded
        run_dir = _open_run_folder(Path(runs_root), inputs, settings)
    reached = reached_step(run_dir)
    if reached > target:
        key = "training.num_steps" if until_step is None else "until_step"
        _check_checkpoint_kept(run_dir, target, reached, settings.training, key)
        log.info(
            "%s already reached step %d; its checkpoint of step %d stands for it",
            run_dir,
            reached,
            target,
        )
    elif reached < target:
        result = _train_run(
            images,
            run_dir,
            settings,
            inputs.identity(),
            target,
            provenance=provenance,
            max_wall_time_s=max_wall_time_s,
            progress=True,
        )
        if result.step < target:
            print(
                f"{run_dir}: stopped at step {result.step} of {target} ({result.stopped_by}); "
                "rerun to resume from the saved state",
                file=sys.stderr,
            )
            return EXIT_RESUME_LATER
    if state.is_main_process:
        write_run_marker(
            Path(marker_json),
            run_dir,
            inputs,
            target,
            settings.training.checkpoint_every,
            provenance,
        )
    return 0
