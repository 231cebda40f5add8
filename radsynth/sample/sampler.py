"""Sampling one shard of synthetic radiographs from a trained DDPM into a Zarr v3 store.

`sample_shard` checks the settings, builds the scheduler (`schedulers`), describes the shard
(`work_store.ShardRequest`) and runs the batch loop: each pending batch of the resumable work
store (`work_store`) is denoised from its per-image seeds (`denoising`, `seeds`), quantized to
uint8 (`quantization`) and written with its checksum. `sample_set_shard` is the stage's job: one
shard of a configured sample set from a checkpoint file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

import torch
import zarr
from accelerate import PartialState
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from tqdm import tqdm

from radsynth.core.settings.sample import Weights
from radsynth.sample.denoising import sample_batch
from radsynth.sample.plan import seed_label, shard_plan
from radsynth.sample.quantization import QUANTIZATIONS
from radsynth.sample.schedulers import (
    PREDICTION_TYPES,
    SAMPLERS,
    as_betas,
    betas_digest,
    make_sampler_scheduler,
    scheduler_attrs,
)
from radsynth.sample.work_store import (
    ShardRequest,
    open_work_store,
    pending_batches,
    promote,
    require_finished_output,
    write_batch,
)
from radsynth.train.checkpoint_io import load_checkpoint_weights, read_checkpoint_settings

#: The names `sampling.weights` accepts, as the config model lists them.
WEIGHTS: tuple[str, ...] = get_args(Weights)


def square_side(unet: torch.nn.Module) -> int:
    """The model's image side; radiographs are sampled square (the paper: 256x256)."""
    size = unet.sample_size
    sides = {int(size)} if isinstance(size, int) else {int(side) for side in size}
    if len(sides) != 1:
        raise ValueError(f"the UNet's sample_size {size} is not square")
    return sides.pop()


def weights_digest(unet: torch.nn.Module) -> str:
    """SHA-256 of the parameters and buffers: a partial store is only resumed with the same
    weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(unet.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


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
    """Sample one shard into `out_store`, resuming the work store under `work_dir` if a run was
    cut short.

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
        require_finished_output(out_store, request)
        return out_store
    group = open_work_store(
        out_store, Path(work_dir), request, {**provenance, "device": str(device)}
    )
    unet.eval()
    _fill_batches(group, request, unet, scheduler, device=device, progress=progress)
    return promote(group, out_store)


def _fill_batches(
    group: zarr.Group,
    request: ShardRequest,
    unet: torch.nn.Module,
    scheduler: SchedulerMixin,
    *,
    device: str | torch.device,
    progress: bool,
) -> None:
    """The batch loop: sample each batch still pending, from its images' own seeds, and write it
    with its checksum (a kill loses at most the batch in flight)."""
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
            write_batch(group, request, batch, images, seeds)
            bar.update(stop - start)


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
            f"sampling.sets.{sample_set} has {len(shards)} shards; "
            f"shard {shard_index} does not exist"
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
