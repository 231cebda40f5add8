"""Sampling synthetic radiographs from a trained DDPM into resumable Zarr v3 shards.

The paper sampled about 27,000 images from three checkpoints in jobs capped at 24 hours, so a
sampling job must survive being killed: it writes into a work store outside the declared output
(Snakemake deletes declared outputs before rerunning a job), marks each batch done only after its
images are written, and on rerun verifies the finished batches against their SHA-256 and continues
with the rest. The finished store is renamed into place in one step.

Each image's randomness (its initial noise and the noise of every stochastic step) comes from its
own generator seeded by `image_seed(base seed, checkpoint, global index)`, so an image's noise does
not depend on the shard, the batch or the other images. On CPU the network's float arithmetic is
not batch-invariant (MKL picks different GEMM kernels for different batch sizes: about 1e-7 per
layer), so a different batch size can move a pixel by one grey level; the same batch layout
(shard start and batch size, both recorded and checked on resume) gives byte-identical images.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import zarr
from accelerate import PartialState
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from tqdm import tqdm

from radsynth.sample.plan import seed_label, shard_plan
from radsynth.sample.store import STORE_FORMAT, read_store_attrs
from radsynth.train.checkpoint_io import load_checkpoint_weights, read_checkpoint_settings

log = logging.getLogger(__name__)

Sampler = Literal["ddpm", "ddim", "dpmsolver++"]
SAMPLERS: tuple[str, ...] = ("ddpm", "ddim", "dpmsolver++")
QUANTIZATIONS: tuple[str, ...] = ("round", "truncate")
WEIGHTS: tuple[str, ...] = ("ema", "online")
PREDICTION_TYPES: tuple[str, ...] = ("v_prediction", "epsilon", "sample")
#: Files zarr's LocalStore writes before renaming them into place; a SIGKILL can leave them behind.
_INTERRUPTED_WRITE = re.compile(r"\.[0-9a-f]{32}\.partial$")


class RederivedNoiseDDIMScheduler(DDIMScheduler):
    """DDIM stepping with the noise re-derived from the clamped x0, as lucidrains' `ddim_sample` does.

    lucidrains (`model_predictions(..., clip_x_start=True, rederive_pred_noise=True)`) moves x_t along
    eps = (x_t - sqrt(alpha-bar) x0) / sqrt(1 - alpha-bar) computed from the clamped x0. diffusers
    has this only as the `use_clipped_model_output` argument of `step`, not as a config option, and
    `sample_images` drives every scheduler through the same `step` call, hence this subclass. When
    nothing is clamped the re-derived noise equals the model's, so it is always on.
    """

    def step(self, *args: Any, **kwargs: Any) -> Any:
        return super().step(*args, use_clipped_model_output=True, **kwargs)


def make_sampler_scheduler(
    name: Sampler, betas: Any, *, prediction_type: str, clip_sample: bool, num_train_timesteps: int
) -> SchedulerMixin:
    """A diffusers scheduler on the training betas (lucidrains' sigmoid schedule is not diffusers' own).

    ddpm: ancestral sampling with the posterior variance (lucidrains' p_sample; the paper ran 1,000
    steps). ddim: eta 0 as lucidrains' `ddim_sample`: "trailing" timesteps (999, 959, ... for 25 of
    1,000; diffusers' default "leading" starts at 960), noise re-derived from the clamped x0, and a
    final alpha-bar of 1 so that the last step returns x0 (lucidrains' `time_next < 0` branch). Its
    timesteps equal lucidrains' only when `steps` divides `num_train_timesteps` (otherwise diffusers
    rounds where lucidrains truncates). dpmsolver++: second-order multistep. `clip_sample` clamps the
    predicted x0 to [-1, 1] at every step in all three; DPM-Solver++ has no clip_sample option, so
    there it is its dynamic thresholding with sample_max_value 1, which reduces exactly to that clamp.
    """
    betas = as_betas(betas)
    if len(betas) != num_train_timesteps:
        raise ValueError(
            f"betas hold {len(betas)} timesteps but num_train_timesteps is {num_train_timesteps}"
        )
    common = dict(
        num_train_timesteps=num_train_timesteps,
        trained_betas=betas,
        prediction_type=prediction_type,
    )
    if name == "ddpm":
        return DDPMScheduler(
            **common, variance_type="fixed_small", clip_sample=clip_sample, clip_sample_range=1.0
        )
    if name == "ddim":
        return RederivedNoiseDDIMScheduler(
            **common,
            clip_sample=clip_sample,
            clip_sample_range=1.0,
            timestep_spacing="trailing",
            set_alpha_to_one=True,
        )
    if name == "dpmsolver++":
        return DPMSolverMultistepScheduler(
            **common,
            algorithm_type="dpmsolver++",
            solver_order=2,
            thresholding=clip_sample,
            sample_max_value=1.0,
        )
    raise ValueError(f"sampling.sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")


def as_betas(betas: Any) -> np.ndarray:
    """Training betas as a 1-D float64 array, refusing values a diffusion schedule cannot hold."""
    if isinstance(betas, torch.Tensor):
        betas = betas.detach().cpu().double().numpy()
    array = np.asarray(betas, dtype=np.float64)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(f"betas must be a non-empty 1-D sequence, got shape {array.shape}")
    if not np.all((array > 0) & (array < 1)):
        raise ValueError("betas must lie strictly between 0 and 1")
    return array


def image_seed(base_seed: int, checkpoint: str, global_index: int) -> int:
    """A 63-bit seed from SHA-256 of (base seed, checkpoint, index): the same image whatever the sharding."""
    if isinstance(base_seed, bool) or not isinstance(base_seed, (int, np.integer)):
        raise TypeError(f"base_seed must be an integer, got {base_seed!r}")
    if (
        isinstance(global_index, bool)
        or not isinstance(global_index, (int, np.integer))
        or global_index < 0
    ):
        raise ValueError(f"global_index must be a non-negative integer, got {global_index!r}")
    canonical = json.dumps(
        ["radsynth-image-seed/1", int(base_seed), str(checkpoint), int(global_index)]
    )
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def image_generators(seeds: Sequence[int], device: str | torch.device) -> list[torch.Generator]:
    """One generator per image: the only source of that image's randomness."""
    return [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]


def initial_noise(
    generators: Sequence[torch.Generator],
    shape: tuple[int, ...],
    *,
    device: str | torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """x_T, each image drawn from its own generator (on the generator's device, then moved)."""
    draws = [
        torch.randn((1, *shape), generator=g, device=g.device, dtype=dtype) for g in generators
    ]
    return torch.cat(draws).to(device)


def to_uint8(images: torch.Tensor, quantization: str) -> np.ndarray:
    """[-1, 1] -> [0, 255]. round: add 0.5 then truncate (torchvision save_image); truncate: I-SynMed."""
    scaled = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1) * 255
    if quantization == "round":
        scaled = torch.floor(scaled + 0.5)
    elif quantization != "truncate":
        raise ValueError(
            f"sampling.quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}"
        )
    return scaled.to(torch.uint8).numpy()


@torch.inference_mode()
def sample_images(
    unet: torch.nn.Module,
    scheduler: SchedulerMixin,
    generators: list[
        torch.Generator
    ],  # a list: diffusers' randn_tensor reads a tuple as one generator
    *,
    steps: int,
    image_size: int,
    device: str | torch.device,
) -> torch.Tensor:
    """The sampling loop: x_T from the generators, then one scheduler step per timestep; (B, C, H, W) in [-1, 1].

    `unet` is called as lucidrains' Unet is (either architecture of radsynth.train.model): the noisy
    batch and the timestep repeated per image, shape (B,), returning the prediction tensor.

    Per-image noise in the stochastic steps is exact: given a list of generators, diffusers'
    `randn_tensor` (which DDPMScheduler.step and the other schedulers call) draws image i's noise
    from generator i, with the same shape (1, C, H, W) as `initial_noise` uses.
    """
    shape = (unet.channels, image_size, image_size)
    sample = (
        initial_noise(generators, shape, device=device, dtype=unet.dtype)
        * scheduler.init_noise_sigma
    )
    scheduler.set_timesteps(steps, device=device)
    for timestep in scheduler.timesteps:
        model_output = unet(
            scheduler.scale_model_input(sample, timestep), timestep.expand(len(sample))
        )
        sample = scheduler.step(model_output, timestep, sample, generator=generators).prev_sample
    return sample


def sample_batch(
    unet: torch.nn.Module,
    scheduler: SchedulerMixin,
    seeds: Sequence[int],
    *,
    steps: int,
    image_size: int,
    device: str | torch.device,
    quantization: str,
    generator_device: str = "cpu",  # CPU generators give the same noise on any sampling device
) -> np.ndarray:
    """Sample one batch, each image from its own seed, returning uint8 images (B, H, W)."""
    generators = image_generators(seeds, generator_device)
    images = sample_images(
        unet, scheduler, generators, steps=steps, image_size=image_size, device=device
    )
    return to_uint8(images[:, 0], quantization)


def square_side(unet: torch.nn.Module) -> int:
    """The model's image side; radiographs are sampled square (the paper: 256x256)."""
    size = unet.sample_size
    sides = {int(size)} if isinstance(size, int) else {int(side) for side in size}
    if len(sides) != 1:
        raise ValueError(f"the UNet's sample_size {size} is not square")
    return sides.pop()


def weights_digest(unet: torch.nn.Module) -> str:
    """SHA-256 of the parameters and buffers: a partial store is only resumed with the same weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(unet.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def betas_digest(betas: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(betas, dtype="<f8").tobytes()).hexdigest()


@dataclass(frozen=True)
class ShardRequest:
    """What a shard holds; a partial store is resumed only if every field matches."""

    checkpoint: str
    sampler: str
    steps: int
    weights: str
    clip_sample: bool
    quantization: str
    prediction_type: str
    base_seed: int
    shard_index: int
    first_global_index: int
    n_images: int
    batch_size: int
    image_size: int
    model_dtype: str
    model_sha256: str
    betas_sha256: str
    scheduler: dict
    format: str = STORE_FORMAT

    @property
    def n_batches(self) -> int:
        return -(-self.n_images // self.batch_size)

    def attrs(self) -> dict[str, Any]:
        """As JSON would store them, so they compare equal to what a store reads back."""
        return json.loads(json.dumps(asdict(self), default=str))

    def batch_range(self, batch: int) -> tuple[int, int]:
        """Local [start, stop) of a batch; the last batch may be short."""
        start = batch * self.batch_size
        return start, min(start + self.batch_size, self.n_images)

    def seeds(self, start: int, stop: int) -> np.ndarray:
        first = self.first_global_index
        seeds = [image_seed(self.base_seed, self.checkpoint, first + i) for i in range(start, stop)]
        return np.array(seeds, dtype=np.int64)


def _check_settings(choices: dict[str, str], counts: dict[str, int]) -> None:
    """Refuse a bad setting before any work, naming its key."""
    allowed = {
        "sampler": SAMPLERS,
        "quantization": QUANTIZATIONS,
        "weights": WEIGHTS,
        "prediction_type": PREDICTION_TYPES,
    }
    for key, value in choices.items():
        if value not in allowed[key]:
            raise ValueError(
                f"sampling.{key} must be one of {', '.join(allowed[key])}, got {value!r}"
            )
    for key, value in counts.items():
        minimum = 0 if key in ("shard_index", "first_global_index") else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"sampling.{key} must be an integer >= {minimum}, got {value!r}")


def scheduler_attrs(scheduler: SchedulerMixin) -> dict[str, Any]:
    """The scheduler's full config (its defaults change results too), without the betas array and
    diffusers' private bookkeeping (`_use_default_values` is a list in set order)."""
    config = {
        key: value
        for key, value in scheduler.config.items()
        if key != "trained_betas" and not key.startswith("_")
    }
    return {"class": type(scheduler).__name__, **json.loads(json.dumps(config, default=str))}


def work_store_path(out_store: Path, work_dir: Path) -> Path:
    return Path(work_dir) / f"{Path(out_store).name}.partial"


def store_path(group: zarr.Group) -> Path:
    """The directory of a group opened from a local path (for messages and the final rename)."""
    return Path(group.store.root)


def sample_shard(
    unet: torch.nn.Module,
    betas: Any,
    out_store: Path,
    *,
    work_dir: Path,
    checkpoint_label: str,
    shard_index: int,
    first_global_index: int,
    n_images: int,
    batch_size: int,
    base_seed: int,
    sampler: str,
    steps: int,
    clip_sample: bool,
    quantization: str,
    weights: str,
    prediction_type: str,
    device: str | torch.device,
    provenance: dict,
    progress: bool = True,
) -> Path:
    """Sample one shard into `out_store`, resuming the work store under `work_dir` if a run was cut short.

    A partial store made for a different request (any `ShardRequest` field) is refused, never
    silently rebuilt: it may hold hours of work. A complete `out_store` for this request is returned
    as is. A full disk stops the job with the reason; finished batches are kept for the rerun.
    """
    _check_settings(
        {
            "sampler": sampler,
            "quantization": quantization,
            "weights": weights,
            "prediction_type": prediction_type,
        },
        {
            "shard_index": shard_index,
            "first_global_index": first_global_index,
            "n_images": n_images,
            "batch_size": batch_size,
            "steps": steps,
        },
    )
    betas = as_betas(betas)
    scheduler = make_sampler_scheduler(
        sampler,
        betas,
        prediction_type=prediction_type,
        clip_sample=clip_sample,
        num_train_timesteps=len(betas),
    )
    request = ShardRequest(
        checkpoint=checkpoint_label,
        sampler=sampler,
        steps=steps,
        weights=weights,
        clip_sample=clip_sample,
        quantization=quantization,
        prediction_type=prediction_type,
        base_seed=base_seed,
        shard_index=shard_index,
        first_global_index=first_global_index,
        n_images=n_images,
        batch_size=batch_size,
        image_size=square_side(unet),
        model_dtype=str(unet.dtype),
        model_sha256=weights_digest(unet),
        betas_sha256=betas_digest(betas),
        scheduler=scheduler_attrs(scheduler),
    )
    out_store = Path(out_store)
    if out_store.exists():
        _require_finished_output(out_store, request)
        return out_store
    group = _open_work_store(
        out_store, Path(work_dir), request, {**provenance, "device": str(device)}
    )
    unet.eval()
    _fill_batches(group, request, unet, scheduler, device=device, progress=progress)
    return _promote(group, out_store)


def _require_finished_output(out_store: Path, request: ShardRequest) -> None:
    """An existing output is accepted only when it is the complete result of this very request."""
    attrs = read_store_attrs(out_store)
    if attrs.get("complete") is not True:
        raise ValueError(
            f"{out_store}: exists but is not a complete sample store; delete it and rerun"
        )
    _check_same_request(out_store, attrs, request)


def _check_same_request(store: Path, attrs: dict[str, Any], request: ShardRequest) -> None:
    for key, wanted in request.attrs().items():
        if attrs.get(key) != wanted:
            raise ValueError(
                f"{store}: was made with {key}={attrs.get(key)!r} but this run asks for {key}={wanted!r}; "
                f"delete {store} to start that shard over"
            )


def _open_work_store(
    out_store: Path, work_dir: Path, request: ShardRequest, provenance: dict
) -> zarr.Group:
    """Resume the work store if it exists (same request only), else create it atomically."""
    work_dir.mkdir(parents=True, exist_ok=True)
    out_store.parent.mkdir(parents=True, exist_ok=True)
    if os.stat(work_dir).st_dev != os.stat(out_store.parent).st_dev:
        raise ValueError(
            f"work_dir {work_dir} and {out_store.parent} are on different filesystems; "
            "the finished store must be renamed into place in one step"
        )
    work = work_store_path(out_store, work_dir)
    if not work.exists():
        _create_work_store(work, request, provenance)
        return zarr.open_group(work, mode="r+", zarr_format=3)
    attrs = read_store_attrs(work)
    _check_same_request(work, attrs, request)
    _remove_interrupted_writes(work)
    group = zarr.open_group(work, mode="r+", zarr_format=3)
    group.update_attributes(
        {"resume_provenance": [*attrs.get("resume_provenance", []), provenance]}
    )
    return group


def _create_work_store(work: Path, request: ShardRequest, provenance: dict) -> None:
    """Build the empty store next to its final name, then rename: a kill never leaves half a layout."""
    staging = work.with_name(work.name + ".init")
    shutil.rmtree(staging, ignore_errors=True)
    size, n, per = request.image_size, request.n_images, request.batch_size
    group = zarr.open_group(
        staging,
        mode="w",
        zarr_format=3,
        attributes={
            **request.attrs(),
            "provenance": provenance,
            "resume_provenance": [],
            "complete": False,
        },
    )
    group.create_array(
        "images", shape=(n, size, size), chunks=(per, size, size), dtype="uint8", fill_value=0
    )
    group.create_array("seed", shape=(n,), chunks=(per,), dtype="int64", fill_value=-1)
    group.create_array("global_index", shape=(n,), chunks=(per,), dtype="int64", fill_value=-1)
    group.create_array(
        "batch_sha256", shape=(request.n_batches, 32), chunks=(1, 32), dtype="uint8", fill_value=0
    )
    group.create_array(
        "batch_done", shape=(request.n_batches,), chunks=(1,), dtype="bool", fill_value=False
    )
    os.replace(staging, work)


def _remove_interrupted_writes(store: Path) -> None:
    for path in store.rglob("*.partial"):
        if _INTERRUPTED_WRITE.search(path.name):
            path.unlink()


def batch_sha256(images: np.ndarray, seeds: np.ndarray, global_indices: np.ndarray) -> np.ndarray:
    """Checksum of everything a batch writes, stored with it so a resumed run can verify it."""
    digest = hashlib.sha256()
    for array in (images, seeds.astype("<i8"), global_indices.astype("<i8")):
        digest.update(np.ascontiguousarray(array).tobytes())
    return np.frombuffer(digest.digest(), dtype=np.uint8)


def _batch_state(
    arrays: dict[str, zarr.Array], batch: int, start: int, stop: int, where: Path
) -> Literal["todo", "done", "damaged"]:
    """done: marked done and reads back with its stored checksum; damaged: marked done but it does not.

    Any exception while reading counts as damage: the codecs raise many types on corrupt chunks.
    """
    try:
        if not bool(arrays["batch_done"][batch]):
            return "todo"
        stored = arrays["batch_sha256"][batch]
        actual = batch_sha256(
            arrays["images"][start:stop],
            arrays["seed"][start:stop],
            arrays["global_index"][start:stop],
        )
    except Exception as exc:  # noqa: BLE001 - see docstring
        log.warning("%s: batch %d is unreadable (%s); recomputing it", where, batch, exc)
        return "damaged"
    if not np.array_equal(stored, actual):
        log.warning("%s: batch %d fails its checksum; recomputing it", where, batch)
        return "damaged"
    return "done"


def pending_batches(group: zarr.Group, request: ShardRequest) -> list[int]:
    """Batches still to sample: not marked done, or marked done but damaged (then unmarked)."""
    arrays = {
        name: group[name]
        for name in ("images", "seed", "global_index", "batch_sha256", "batch_done")
    }
    where = store_path(group)
    states = [
        _batch_state(arrays, b, *request.batch_range(b), where) for b in range(request.n_batches)
    ]
    for batch, state in enumerate(states):
        if state == "damaged":
            arrays["batch_done"][batch] = False
    log.info(
        "%s: %d of %d batches done and verified", where, states.count("done"), request.n_batches
    )
    return [batch for batch, state in enumerate(states) if state != "done"]


def _fill_batches(
    group: zarr.Group,
    request: ShardRequest,
    unet: torch.nn.Module,
    scheduler: SchedulerMixin,
    *,
    device: str | torch.device,
    progress: bool,
) -> None:
    pending = pending_batches(group, request)
    done_images = request.n_images - sum(
        stop - start for start, stop in map(request.batch_range, pending)
    )
    with tqdm(
        total=request.n_images,
        initial=done_images,
        unit="image",
        disable=not progress,
        desc=f"{request.checkpoint} shard {request.shard_index}",
    ) as bar:
        for batch in pending:
            start, stop = request.batch_range(batch)
            seeds = request.seeds(start, stop)
            images = sample_batch(
                unet,
                scheduler,
                seeds.tolist(),
                steps=request.steps,
                image_size=request.image_size,
                device=device,
                quantization=request.quantization,
            )
            _write_batch(group, request, batch, images, seeds)
            bar.update(stop - start)


def _write_batch(
    group: zarr.Group, request: ShardRequest, batch: int, images: np.ndarray, seeds: np.ndarray
) -> None:
    """Images, seeds and checksum first, the done flag last; a failed write names the batch and what survives."""
    start, stop = request.batch_range(batch)
    global_indices = np.arange(start, stop, dtype=np.int64) + request.first_global_index
    try:
        group["images"][start:stop] = images
        group["seed"][start:stop] = seeds
        group["global_index"][start:stop] = global_indices
        group["batch_sha256"][batch] = batch_sha256(images, seeds, global_indices)
        group["batch_done"][batch] = True
    except OSError as exc:
        n_done = int(np.count_nonzero(group["batch_done"][:]))
        reason = exc.strerror or os.strerror(exc.errno or errno.EIO)
        raise OSError(
            exc.errno,
            (
                f"{store_path(group)}: writing batch {batch} (global images {global_indices[0]}..{global_indices[-1]}) "
                f"failed: {reason}; the {n_done} finished batch(es) stay marked done and are reused when the job is rerun"
            ),
        ) from exc


def _promote(group: zarr.Group, out_store: Path) -> Path:
    """Mark the store complete, then rename it to the declared output (atomic on one filesystem)."""
    group.update_attributes({"complete": True})
    work = store_path(group)
    os.replace(work, out_store)
    log.info("%s: complete, moved to %s", work, out_store)
    return out_store


# ----------------------------------------------------------------------------------------------
# The sampling stage, driven by the config


#: radsynth trains the v-objective only (lucidrains' pred_v, the I-SynMed setting).
TRAINED_PREDICTION_TYPE = "v_prediction"


def sample_set_shard(
    checkpoint_path: Path,
    out_store: Path,
    *,
    work_dir: Path,
    config: Mapping[str, Any],
    sample_set: str,
    checkpoint_label: str,
    shard_index: int,
    provenance: dict,
    progress: bool = True,
) -> Path:
    """One shard job: load the checkpoint's configured weights and sample its share of the set.

    The network and noise schedule come from the checkpoint's own metadata, so only the sampling
    settings are configured here. The device comes from accelerate (CUDA when present, else
    CPU), so one source runs both.
    """
    settings = read_checkpoint_settings(checkpoint_path)
    sampling = config["sampling"]
    plan = sampling["sets"][sample_set]
    shards = shard_plan(plan["n_images"], plan["images_per_shard"])
    if not 0 <= shard_index < len(shards):
        raise ValueError(
            f"sampling.sets.{sample_set} has {len(shards)} shards; shard {shard_index} does not exist"
        )
    first, count = shards[shard_index]
    device = PartialState().device
    unet = load_checkpoint_weights(checkpoint_path, sampling["weights"], settings.model).to(device)
    return sample_shard(
        unet,
        settings.diffusion.betas(),
        out_store,
        work_dir=work_dir,
        checkpoint_label=seed_label(sample_set, checkpoint_label),
        shard_index=shard_index,
        first_global_index=first,
        n_images=count,
        batch_size=sampling["batch_size"],
        base_seed=sampling["base_seed"],
        sampler=sampling["sampler"],
        steps=sampling["steps"],
        clip_sample=sampling["clip_sample"],
        quantization=sampling["quantization"],
        weights=sampling["weights"],
        prediction_type=TRAINED_PREDICTION_TYPE,
        device=device,
        provenance={**provenance, "checkpoint_file": str(checkpoint_path)},
        progress=progress,
    )
