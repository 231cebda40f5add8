"""Memory and GPUs: what a heavy job needs (from the config) and what this machine has.

Snakemake schedules jobs against declared resources only: without a `mem_mb` per rule and a
limit for the machine, a local run starts jobs side by side that together do not fit, and the
kernel kills one (each of the paper preset's two 256 px training runs needs about 22 GB on a
CPU). The heavy rules declare `mem_mb=job_memory_mb(config, rule)`; profiles/default sets the
limit to `host_memory_mb()` and the GPU count to `host_gpu_count()`. Torch-free: the DAG
imports it.

How the numbers were measured: peak RSS (`resource.getrusage(...).ru_maxrss`) of a fresh Python
on the CPU, torch 2.14.1, float32, 2 cores shared with other work (README, "Resources at the
paper's scale", has the table):

- a bare script importing torch and building a network: 784 MB before the network; a
  workflow job imports more (the stages' modules: 824 to 860 MB) and runs inside Snakemake's
  script preamble: the demo's training job peaked at 934 MB in its benchmark against 885 MB for
  the same network and batch in the bare script. `JOB_BASE_MB` (900) stands for both.
- training: the configured network, its EMA and Adam, then two optimizer steps (forward,
  backward, clipping, Adam, EMA update) on random images. The paper network (lucidrains Unet,
  35,705,089 parameters) peaked at 4,786 / 6,727 / 11,314 MB at 256 px with batches of 1 / 2 /
  4, and at 3,113 / 6,647 MB at 64 / 128 px with batch 8: linear in batch x pixels (128 px x 8
  and 256 px x 2 agree within 1.2%), 2,294 MB per 256 px image (the batch 2 to 4 slope, the
  steepest) above an intercept of 2,492 MB (the largest over the five runs, so the line lies on
  or above every measurement). Batch 8 at 256 px (about 21 GB) was not run on the shared
  machine: it is this line's extrapolation.
- inference (sampling; the validation loss, under `torch.no_grad`): 1,513 MB at 256 px x 1,
  1,485 / 2,373 MB at 64 px x 16 / 64 (one and four 256 px images' worth of pixels): 296 MB
  per 256 px image above 1,217 MB. The validation pass at `training.val_batch_size` (64 in the
  paper preset) needs more than a training step at batch 8.
- the offline FID InceptionV3 (299 px input; the same network as the `fid-inception` weights)
  through `extract_features`: 1,332 / 2,177 MB with batches of 16 / 64 of 256 px images above
  794 MB of imports; torchvision's vit_b_16 at 384 px (the audit's ViT) under `torch.no_grad`:
  1,354 / 1,963 MB with batches of 8 / 32 above 683 MB of imports.
- the anatomy stage's networks, over 833 MB of imports (torch, torchvision, radsynth.anatomy):
  the landmark network (`radsynth.anatomy.network`) at the paper preset's `anatomy.model`
  (stem stride 4, 4 trunk levels, 128 pyramid and head channels) and 256 px: two Adam steps of
  the training loss (augmentation included) peaked at 1,289 / 1,869 MB with batches of 4 / 16
  (48.3 MB per image above 1,096 MB), `predict_landmarks` at 1,159 / 1,758 MB with batches of
  16 / 64 (12.5 MB per image above 959 MB). The demo's network at 256 px (3 levels, 64
  channels) took 1,697 / 1,444 MB in training x 16 / inference x 64, `landmark_activation_units`
  predicts 1,688 / 1,570; the paper's at 128 px with stem stride 2 took 1,761 / 1,742 MB, four
  times 128 px at stride 4's activations predict 1,869 / 1,758 (every map has four times the
  cells). At the demo's 32 px every run stayed within 92 MB of the imports (training x 16: 925
  MB, inference x 64: 882 MB). The two-sample classifier (ResNet-18, 4 stages, at 256 px):
  1,365 / 2,111 MB in training with batches of 8 / 32 (31.1 MB per image above 1,116 MB),
  1,127 / 1,561 MB scoring batches of 16 / 64 (9.0 MB per image above 982 MB); with 2 stages
  (the demo's) 1,810 MB at batch 32, so the 4-stage line bounds fewer stages. The anatomy
  stage's fixed parts are the paper preset's network's for any `anatomy.model` (12,044,119
  values; the demo's has 2,959,063).

A network other than the presets' is scaled by its width: activations by the channels of each
level times that level's share of the pixels (`activation_units`), the fixed part by the
parameter count, which grows with the squared widths (`parameter_units`; the fixed parts were
fitted on the paper network). A full-attention level above 32 x 32 px (none in either preset)
keeps an attention matrix per head that this does not count. Images are 1 byte per pixel.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Imports and Snakemake's script preamble of a workflow job (MB; module docstring).
JOB_BASE_MB = 900
#: What the bare measuring script had imported: the intercepts below are counted from it.
MEASURED_IMPORT_MB = 784
#: The paper network's parameter units (`parameter_units`: dim 64, mults 1, 2, 4, 8).
PAPER_PARAMETER_UNITS = 64**2 * (1 + 4 + 16 + 64)
#: The paper network's activation units (`activation_units`: 64 x (1 + 2/4 + 4/16 + 8/64)).
PAPER_ACTIVATION_UNITS = 120
#: Training memory (MB) per parameter unit besides the activations: weights, gradients, Adam's
#: two moments, the EMA copy, clipping's temporaries and the allocator's reserve (1,708 MB for
#: the paper network, 12.5 copies of its 143 MB of weights).
TRAIN_FIXED_MB_PER_PARAMETER_UNIT = (2492 - MEASURED_IMPORT_MB) / PAPER_PARAMETER_UNITS
#: Inference memory (MB) per parameter unit besides the activations (433 MB for the paper
#: network: its weights and the allocator's reserve).
INFER_FIXED_MB_PER_PARAMETER_UNIT = (1217 - MEASURED_IMPORT_MB) / PAPER_PARAMETER_UNITS
#: Bytes of activations per activation unit, pixel and image, in training (the forward kept for
#: the backward) and in inference. lucidrains: 2,294 and 296 MB per 256 px image. diffusers
#: (the demo's network, 28 units): 1,774 against 885 MB from 32 to 128 px with batch 8 in
#: training; 1,420 against 824 MB from 32 px x 8 to 128 px x 32 in inference.
TRAIN_ACTIVATION_BYTES = {
    "lucidrains": 2294 * 2**20 / (256**2 * PAPER_ACTIVATION_UNITS),
    "diffusers": (1774 - 885) * 2**20 / (8 * (128**2 - 32**2) * 28),
}
INFER_ACTIVATION_BYTES = {
    "lucidrains": 296 * 2**20 / (256**2 * PAPER_ACTIVATION_UNITS),
    "diffusers": (1420 - 824) * 2**20 / ((32 * 128**2 - 8 * 32**2) * 28),
}
#: The FID InceptionV3, a fixed network: MB besides the imports, and MB per image of a batch
#: (`evaluate.batch_size`; every image is resized to 299 px first).
INCEPTION_MB = 1332 - 16 * (2177 - 1332) / 48 - 794
INCEPTION_MB_PER_IMAGE = (2177 - 1332) / 48
#: The audit's ViT (vit_b_16 at 384 px), likewise, at imagededup's own batch of 64 images:
#: 1,354 / 1,963 MB with batches of 8 / 32 above 683 MB of imports.
VIT_MB = 1354 - 8 * (1963 - 1354) / 24 - 683
VIT_MB_PER_IMAGE = (1963 - 1354) / 24
IMAGEDEDUP_BATCH = 64
#: CSXA V3.0's image count, the atlas size for any source but the demo (data.demo.n_images).
CSXA_IMAGES = 4963
#: Images held twice: the atlas read whole, then its training and validation rows copied out;
#: a set of samples read from its stores, then concatenated or flipped.
COPIES = 2
#: The anatomy stage's measuring script had imported torchvision and radsynth.anatomy too (MB).
ANATOMY_IMPORT_MB = 833
#: ResNet-18's stage widths (radsynth.anatomy.network.STAGE_CHANNELS; this module is torch-free).
RESNET18_STAGE_CHANNELS = (64, 128, 256, 512)
#: The paper preset's landmark network in `landmark_activation_units` (256 + 192 + 256 / 4 +
#: 384 / 16 + 640 / 64 + 128), and its heatmap cells at 256 px (64 x 64).
PAPER_LANDMARK_UNITS = 674
PAPER_LANDMARK_CELLS = (256 // 4) ** 2
#: Landmark network memory besides the activations (MB), in training (weights, gradients, Adam)
#: and in inference: the intercepts of the module docstring's lines over the imports.
LANDMARK_TRAIN_FIXED_MB = 1289 - 4 * (1869 - 1289) / 12 - ANATOMY_IMPORT_MB
LANDMARK_INFER_FIXED_MB = 1159 - 16 * (1758 - 1159) / 48 - ANATOMY_IMPORT_MB
#: Bytes of activations per landmark unit, heatmap cell and image: 48.3 and 12.5 MB per 256 px
#: image of the paper preset's network.
LANDMARK_TRAIN_BYTES = (1869 - 1289) / 12 * 2**20 / (PAPER_LANDMARK_CELLS * PAPER_LANDMARK_UNITS)
LANDMARK_INFER_BYTES = (1758 - 1159) / 48 * 2**20 / (PAPER_LANDMARK_CELLS * PAPER_LANDMARK_UNITS)
#: The two-sample classifier (4 stages, an upper bound for fewer): MB besides the activations,
#: and MB per 256 px image, in training (`anatomy.two_sample.batch_size`) and in scoring (at
#: `anatomy.batch_size`; measured at 64).
TWO_SAMPLE_TRAIN_MB = 1365 - 8 * (2111 - 1365) / 24 - ANATOMY_IMPORT_MB
TWO_SAMPLE_TRAIN_MB_PER_IMAGE = (2111 - 1365) / 24
TWO_SAMPLE_SCORE_MB = 1127 - 16 * (1561 - 1127) / 48 - ANATOMY_IMPORT_MB
TWO_SAMPLE_SCORE_MB_PER_IMAGE = (1561 - 1127) / 48
#: The evaluate stage's cached Inception features the real-vs-real floor reads: 2,048 float64
#: per atlas image (bytes).
INCEPTION_FEATURE_BYTES = 2048 * 8
#: The small CPU jobs on the atlas (facing classifier at 64 px, plausibility screen at 20 px):
#: the demo's benchmarks give 764 and 595 MB of max_rss.
SMALL_JOB_MB = 100


def activation_units(model: Mapping[str, Any]) -> float:
    """Channels summed over the network's levels, each weighted by its share of the pixels (a
    level down has a quarter of them): what activations per pixel scale with."""
    return sum(
        model["base_channels"] * multiplier / 4**level
        for level, multiplier in enumerate(model["channel_multipliers"])
    )


def parameter_units(model: Mapping[str, Any]) -> float:
    """The sum of each level's squared width: what a U-Net's parameter count scales with."""
    return sum((model["base_channels"] * m) ** 2 for m in model["channel_multipliers"])


def landmark_activation_units(model: Mapping[str, Any]) -> float:
    """Channels per heatmap cell (S / stem_stride a side) over the landmark network's maps: the
    stem's 64 at twice that side, each trunk stage's channels with the pyramid's at its level (a
    quarter of the cells a level down) and the head's. A finer stem stride scales every map by
    its cells (the 3x3 stems are counted as the 7x7 one: measured, an upper bound)."""
    return (
        4 * RESNET18_STAGE_CHANNELS[0]
        + sum(
            (RESNET18_STAGE_CHANNELS[level] + model["fpn_channels"]) / 4**level
            for level in range(model["trunk_levels"])
        )
        + model["head_channels"]
    )


def _images_mb(n_images: int, size: int) -> float:
    return n_images * size**2 / 2**20


def _n_atlas(config: Mapping[str, Any]) -> int:
    data = config["data"]
    return data["demo"]["n_images"] if data["source"] == "demo" else CSXA_IMAGES


def _atlas_mb(config: Mapping[str, Any]) -> float:
    return COPIES * _images_mb(_n_atlas(config), config["preprocess"]["size"])


def _activations_mb(model: Mapping[str, Any], per_unit_bytes: float, batch: int) -> float:
    return per_unit_bytes * batch * model["sample_size"] ** 2 * activation_units(model) / 2**20


def _audited_set_sizes(config: Mapping[str, Any]) -> list[int]:
    sets = config["sampling"]["sets"]
    return [sets[name]["n_images"] for name in config["audit"]["sample_sets"]]


def _n_selected(config: Mapping[str, Any]) -> int:
    """Selected checkpoints: the configured list, or the most `auto` suggests (the convergence
    window, the best FID and the final checkpoint)."""
    selected = config["checkpoints"]["selected"]
    if selected == "auto":
        return config["checkpoints"]["convergence"]["n_window"] + 2
    return len(selected)


def _train_mb(config: Mapping[str, Any]) -> float:
    """Fixed part, atlas, and the larger of a training step and a validation pass."""
    model, training = config["model"], config["training"]
    arch = model["architecture"]
    step = _activations_mb(model, TRAIN_ACTIVATION_BYTES[arch], training["batch_size"])
    validation = _activations_mb(model, INFER_ACTIVATION_BYTES[arch], training["val_batch_size"])
    fixed = TRAIN_FIXED_MB_PER_PARAMETER_UNIT * parameter_units(model)
    return fixed + _atlas_mb(config) + max(step, validation)


def _sample_mb(config: Mapping[str, Any]) -> float:
    model = config["model"]
    batch = config["sampling"]["batch_size"]
    fixed = INFER_FIXED_MB_PER_PARAMETER_UNIT * parameter_units(model)
    return fixed + _activations_mb(model, INFER_ACTIVATION_BYTES[model["architecture"]], batch)


def _inception_mb(config: Mapping[str, Any]) -> float:
    return INCEPTION_MB + INCEPTION_MB_PER_IMAGE * config["evaluate"]["batch_size"]


def _fid_checkpoint_mb(config: Mapping[str, Any]) -> float:
    """The Inception, the atlas (its features are cached, its images are read) and the FID set."""
    fid_set = _images_mb(config["evaluate"]["samples"]["n_images"], config["preprocess"]["size"])
    return _inception_mb(config) + _atlas_mb(config) + fid_set


def _screen_mb(config: Mapping[str, Any]) -> float:
    """One audited set at a time, with the atlas."""
    size = config["preprocess"]["size"]
    largest = max(_audited_set_sizes(config))
    return SMALL_JOB_MB + _atlas_mb(config) + COPIES * _images_mb(largest, size)


def _memorization_mb(config: Mapping[str, Any]) -> float:
    """The ViT, the atlas, and every audited image of every selected checkpoint at once."""
    size = config["preprocess"]["size"]
    n_synthetic = _n_selected(config) * sum(_audited_set_sizes(config))
    return (
        VIT_MB
        + VIT_MB_PER_IMAGE * IMAGEDEDUP_BATCH
        + _atlas_mb(config)
        + COPIES * _images_mb(n_synthetic, size)
    )


def _landmark_activations_mb(config: Mapping[str, Any], per_unit_bytes: float, batch: int) -> float:
    model = config["anatomy"]["model"]
    cells = (config["preprocess"]["size"] / model["stem_stride"]) ** 2
    return per_unit_bytes * batch * cells * landmark_activation_units(model) / 2**20


def _landmark_inference_mb(config: Mapping[str, Any]) -> float:
    """The landmark network predicting at `anatomy.batch_size` (the encoder features, its
    trunk alone, need less)."""
    batch = config["anatomy"]["batch_size"]
    return LANDMARK_INFER_FIXED_MB + _landmark_activations_mb(config, LANDMARK_INFER_BYTES, batch)


def _landmark_train_mb(config: Mapping[str, Any]) -> float:
    """Fixed part, atlas, and the larger of a training step and a validation pass."""
    anatomy = config["anatomy"]
    step = _landmark_activations_mb(config, LANDMARK_TRAIN_BYTES, anatomy["training"]["batch_size"])
    validation = _landmark_activations_mb(config, LANDMARK_INFER_BYTES, anatomy["batch_size"])
    return LANDMARK_TRAIN_FIXED_MB + _atlas_mb(config) + max(step, validation)


def _utility_students_mb(config: Mapping[str, Any]) -> float:
    """A student trains like the teacher, on the atlas and the utility samples (read, then
    concatenated with the real rows)."""
    samples = config["anatomy"]["utility"]["samples"]["n_images"]
    return _landmark_train_mb(config) + COPIES * _images_mb(samples, config["preprocess"]["size"])


def _set_landmarks_mb(config: Mapping[str, Any]) -> float:
    """One sample set at a time, the largest sampled or FID set."""
    sets = [spec["n_images"] for spec in config["sampling"]["sets"].values()]
    largest = max(*sets, config["evaluate"]["samples"]["n_images"])
    return _landmark_inference_mb(config) + COPIES * _images_mb(
        largest, config["preprocess"]["size"]
    )


def _fid_set_mb(config: Mapping[str, Any]) -> float:
    size = config["preprocess"]["size"]
    return COPIES * _images_mb(config["evaluate"]["samples"]["n_images"], size)


def _real_floor_mb(config: Mapping[str, Any]) -> float:
    """The facing classifier, the landmark network, the atlas and its cached Inception
    features."""
    features = _n_atlas(config) * INCEPTION_FEATURE_BYTES / 2**20
    return SMALL_JOB_MB + _landmark_inference_mb(config) + _atlas_mb(config) + features


def _two_sample_mb(config: Mapping[str, Any]) -> float:
    """The larger of a training step and scoring, with the atlas and one FID set."""
    settings = config["anatomy"]["two_sample"]
    pixels = (config["preprocess"]["size"] / 256) ** 2
    train = TWO_SAMPLE_TRAIN_MB + TWO_SAMPLE_TRAIN_MB_PER_IMAGE * settings["batch_size"] * pixels
    score = (
        TWO_SAMPLE_SCORE_MB
        + TWO_SAMPLE_SCORE_MB_PER_IMAGE * config["anatomy"]["batch_size"] * pixels
    )
    return max(train, score) + _atlas_mb(config) + _fid_set_mb(config)


def _screen_evaluation_mb(config: Mapping[str, Any]) -> float:
    """The facing classifier and plausibility fit, the landmark network, and the atlas with a
    left-facing copy of its train rows."""
    images = _images_mb(_n_atlas(config), config["preprocess"]["size"])
    return SMALL_JOB_MB + _landmark_inference_mb(config) + _atlas_mb(config) + images


#: Rule name -> its memory beyond `JOB_BASE_MB`.
_ESTIMATES = {
    "train": _train_mb,
    "sample_shard": _sample_mb,
    "real_features": lambda config: _inception_mb(config) + _atlas_mb(config),
    "fid_checkpoint": _fid_checkpoint_mb,
    "train_facing": lambda config: SMALL_JOB_MB + _atlas_mb(config),
    "fit_plausibility": lambda config: SMALL_JOB_MB + _atlas_mb(config),
    "screen_samples": _screen_mb,
    "memorization_audit": _memorization_mb,
    "screen_evaluation": _screen_evaluation_mb,
    "landmark_train": _landmark_train_mb,
    "utility_students": _utility_students_mb,
    "landmark_evaluation": lambda config: (
        SMALL_JOB_MB + _landmark_inference_mb(config) + _atlas_mb(config)
    ),
    "set_landmarks": _set_landmarks_mb,
    "atlas_landmark_features": lambda config: _landmark_inference_mb(config) + _atlas_mb(config),
    "landmark_fd": lambda config: _landmark_inference_mb(config) + _fid_set_mb(config),
    "real_floor": _real_floor_mb,
    "two_sample": _two_sample_mb,
    # tables and figures of the anatomy stage (and the atlas's keypoints, read lazily)
    **dict.fromkeys(
        [
            "atlas_keypoints",
            "utility_figure",
            "anatomy_fidelity",
            "anatomy_figure",
            "two_sample_table",
        ],
        lambda config: SMALL_JOB_MB,
    ),
}


def job_memory_mb(config: Mapping[str, Any], job: str) -> int:
    """Peak memory (MB) a job of rule `job` needs on a CPU with `config`, by the measured fit of
    the module docstring, rounded up to a whole 100 MB. On a GPU the activations live on the
    device, so the job needs less of the host's memory."""
    if job not in _ESTIMATES:
        raise ValueError(f"no memory estimate for rule {job!r}; known: {', '.join(_ESTIMATES)}")
    megabytes = JOB_BASE_MB + _ESTIMATES[job](config)
    return int(-(-megabytes // 100) * 100)


#: Where Linux says which cgroups a process is in, and where their files are.
PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_memory_limits(proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> list[int]:
    """Memory limits (bytes) of this process' cgroups, v2 (`memory.max`) and v1
    (`memory.limit_in_bytes`, of its group or, inside a container, of the root), where set."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return []
    limits = []
    for line in lines:
        _, controllers, group = line.split(":", 2)
        if controllers == "":
            candidates = [root / group.lstrip("/") / "memory.max"]
        elif "memory" in controllers.split(","):
            candidates = [
                root / "memory" / group.lstrip("/") / "memory.limit_in_bytes",
                root / "memory" / "memory.limit_in_bytes",
            ]
        else:
            continue
        for candidate in candidates:
            try:
                value = candidate.read_text().strip()
            except OSError:
                continue
            if value.isdigit():  # "max" (v2) is no limit
                limits.append(int(value))
    return limits


def host_memory_mb() -> int:
    """This machine's memory (MB), or its cgroup's limit (a container, a SLURM allocation)
    where lower: the most that jobs running side by side may take together."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min([physical, *cgroup_memory_limits()]) // 2**20


def host_gpu_count() -> int:
    """NVIDIA GPUs this process may use: those the driver lists, or as many as
    CUDA_VISIBLE_DEVICES names where it is set (an empty value hides them all)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([device for device in visible.split(",") if device.strip()])
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0
