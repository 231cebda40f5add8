"""Sampling one shard of synthetic radiographs from a trained DDPM into a Zarr v3 store.

`sample_shard` checks the settings, builds the scheduler (`schedulers`), describes the shard
(`work_store.ShardRequest`) and runs the batch loop: each pending batch of the resumable work
store (`work_store`) is denoised from its per-image seeds (`denoising`, `seeds`), quantized to
uint8 (`quantization`) and written with its checksum. Started by `accelerate launch` with several
processes, the processes share the pending batches and the main process writes them; each batch
keeps its images, seeds and batch size, so the store is the one a single process writes. A stop
signal (SIGTERM) ends the loop once the batches in flight are written. `sample_set_shard` is the
stage's job: one shard of a configured sample set from a checkpoint file.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

import torch
import zarr
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from tqdm import tqdm

from radsynth.core.compile import maybe_compile
from radsynth.core.device import process_state
from radsynth.core.preemption import EXIT_RESUME_LATER, StopRequested, stop_signals
from radsynth.core.settings.sample import MULTISTEP_SAMPLERS, Weights
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

log = logging.getLogger(__name__)

#: The names `sampling.weights` accepts, as the config model lists them.
WEIGHTS: tuple[str, ...] = get_args(Weights)


def sampling_state() -> PartialState:
    """accelerate's process state: the processes `accelerate launch` started (one per GPU, or a
    gloo group on CPU, which accelerate joins only when asked for the CPU), one process else."""
    state = process_state()
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if state.num_processes != launched:
        raise RuntimeError(
            f"accelerate launched {launched} processes but its state, made earlier without "
            f"sampling_state(), counts {state.num_processes}: each would sample the whole shard"
        )
    return state


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
    solver_order: int | None,
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
    SIGTERM raises `StopRequested` once the batches in flight are written. Under `accelerate
    launch` every process calls this with its own `device` and the processes share the batches.
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
        solver_order=solver_order,
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
    state = sampling_state()
    with stop_signals() as signalled:
        group, pending = None, None
        if state.is_main_process:
            run = {**provenance, "device": str(device), "processes": state.num_processes}
            group = open_work_store(out_store, Path(work_dir), request, run)
            pending = pending_batches(group, request)
        pending = broadcast_object_list([pending])[0]
        unet.eval()
        _fill_batches(
            group,
            request,
            pending,
            unet,
            scheduler,
            state=state,
            device=device,
            signalled=signalled,
            progress=progress,
        )
    if state.is_main_process:
        promote(group, out_store)
    state.wait_for_everyone()
    return out_store


def _fill_batches(
    group: zarr.Group | None,
    request: ShardRequest,
    pending: list[int],
    unet: torch.nn.Module,
    scheduler: SchedulerMixin,
    *,
    state: PartialState,
    device: str | torch.device,
    signalled: list[str],
    progress: bool,
) -> None:
    """The batch loop in rounds: in each round every process samples one pending batch from its
    images' own seeds, and the main process (`group`; None on the others) writes the round's
    batches with their checksums, so a kill loses at most the round in flight. A stop signal on
    any process (`signalled`, from `stop_signals`) ends the loop once its round is written (the
    last round completes the shard)."""
    n = state.num_processes
    done_images = request.n_images - sum(
        stop - start for start, stop in map(request.batch_range, pending)
    )
    with tqdm(
        total=request.n_images,
        initial=done_images,
        unit="image",
        disable=not (progress and state.is_main_process),
        desc=f"{request.checkpoint} shard {request.shard_index}",
    ) as bar:
        for first in range(0, len(pending), n):
            index = first + state.process_index
            sampled = []
            for batch in pending[index : index + 1]:  # none for a process idle in the last round
                seeds = request.seeds(*request.batch_range(batch))
                images = sample_batch(
                    unet,
                    scheduler,
                    seeds.tolist(),
                    steps=request.steps,
                    image_size=request.image_size,
                    device=device,
                    quantization=request.quantization,
                )
                sampled.append((batch, seeds, images))
            gathered = gather_object([(sampled, bool(signalled))])
            if group is not None:
                for batch, seeds, images in (item for done, _ in gathered for item in done):
                    write_batch(group, request, batch, images, seeds)
                    bar.update(len(seeds))
            left = len(pending) - min(first + n, len(pending))
            if left and any(stop for _, stop in gathered):
                raise StopRequested(
                    f"{request.checkpoint} shard {request.shard_index}: stopped by a signal with "
                    f"{left} of {request.n_batches} batches still to sample; rerun to continue "
                    "from the finished ones"
                )


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
) -> int:
    """One shard job: load the checkpoint's configured weights and sample its share of the set.

    The network and noise schedule come from the checkpoint's own metadata, so only the sampling
    settings are configured here. The device comes from accelerate (CUDA when present, else
    CPU), so one source runs both. Returns 0 once `out_store` is complete, EXIT_RESUME_LATER when
    a stop signal ended the job early (the rerun continues from the finished batches).
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
    device = sampling_state().device
    unet = load_checkpoint_weights(checkpoint_path, sampling["weights"], settings.model).to(device)
    maybe_compile(unet, settings.training.compile)
    try:
        sample_shard(
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
            # the rule passes the key only to the samplers that read it (a change of it reruns
            # only their sets)
            solver_order=(
                sampling["solver_order"] if sampling["sampler"] in MULTISTEP_SAMPLERS else None
            ),
            clip_sample=sampling["clip_sample"],
            quantization=sampling["quantization"],
            weights=sampling["weights"],
            prediction_type=TRAINED_PREDICTION_TYPE,
            device=device,
            provenance={**provenance, "checkpoint_file": str(checkpoint_path)},
            progress=progress,
        )
    except StopRequested as stop:
        log.warning("%s", stop)
        return EXIT_RESUME_LATER
    return 0
