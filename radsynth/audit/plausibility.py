"""The automated plausibility screen: how unlike the real radiographs a synthetic image's local
anatomical layout is, learned from real (left-facing) images only.

Why this design. The paper removed samples by hand for implausible anatomy: pharynx or trachea
behind the spine, anterior and posterior elements inverted, and the like. Those are errors of
*where* structures lie relative to each other, so the screen models, at every place of a
left-facing image, which local pattern of edges and grey levels real radiographs show there:

1. Each image is area-averaged to `analysis_size` pixels square and standardized (zero mean,
   unit spread), so exposure and film size do not matter.
2. Gradient-orientation energies: central-difference gradients, their magnitude shared out
   between `orientation_bins` *signed* directions (a bright-to-dark edge going right is not one
   going left: that is what tells the airway in front of the spine from one behind it), plus the
   standardized grey level itself; each averaged over `cell` x `cell` pixel cells. A 20 px
   image with 2 px cells gives a 10 x 10 grid of 9 values.
3. At every grid cell, the descriptor of its (2 * neighbourhood + 1)^2 cells (81 values here) gets a
   Gaussian fitted on the real images (mean, covariance shrunk towards its average variance by
   `shrinkage` so a few hundred images suffice). This is PaDiM's idea (Defard et al. 2020) on
   hand-made features instead of a CNN's.
4. An image's atypicality is its largest squared Mahalanobis distance over the grid: the one
   place where it looks least like any real radiograph (stored too, to show reviewers where).
5. Calibration: the real images are cut into `calibration_folds` seeded folds; each fold is
   scored by Gaussians fitted on the others, giving out-of-sample atypicalities of real images.
   **plausibility** = the fraction of real images whose out-of-sample atypicality is at least
   the image's, in [0, 1]: higher = more plausible. A real-like image scores about uniform on
   [0, 1], so a threshold t proposes excluding about a fraction t of real-like images (the
   folds' Gaussians see 1/folds fewer images than the final ones, which errs towards calling
   synthetic images plausible).

Nearest real image: cosine similarity of the flattened cell grid (minus the real images' mean
grid) to each real image's, the same feature space, via `radsynth.audit.neighbours`.

Measured on the demo phantoms (left-facing lateral c-spine films resized to 64 or 32 px; the
screen fitted on real phantoms only, then held-out real phantoms against other held-out ones
corrupted three ways; ROC AUC spine-in-front-of-airway / anterior-posterior elements swapped /
vertebral order scrambled):
  - these settings, 300 fitted, 100 vs 100: 0.999 / 0.972 / 0.947 at 64 px, 1.000 / 0.983 /
    0.959 at 32 px; at 64 px with 150 fitted 0.998 / 0.965 / 0.929, with 900 0.998 / 0.975 / 0.950;
  - at the tests' scale (32 px, 200 fitted, 50 vs 50) over four draws of phantoms: 0.990-0.998 /
    0.912-0.963 / 0.898-0.944 (the tests' own draw: 0.990 / 0.940 / 0.913);
  - alternatives at 64 px, 300 fitted: no grey channel 0.998 / 0.965 / 0.940; unsigned
    orientations 0.888 / 0.890 / 0.833; no neighbourhood (single cells) 0.970 / 0.941 / 0.794;
    whole-image models do worse: PCA reconstruction error of 16 px pixels 0.950 / 0.818 / 0.818,
    of orientation grids 0.984 / 0.894 / 0.841, k-nearest-neighbour distance of pixels
    0.962 / 0.702 / 0.638; k-NN cosine distance (k = 5) in the offline InceptionV3's 2048-d pool
    features 0.928 / 0.721 / 0.918 at 0.3 s per image: pooled deep features are built to ignore
    where things are, which is what this screen must see;
  - at the tests' scale, adding other grid scales (min of their calibrated p-values), a global
    PCA term, or dividing each cell's distance by its real mean all lowered the worst AUC.
Cost on this 2-core CPU: fitting on 4,963 images of 256 px about 30 s and 1.1 GB; scoring about
3 ms an image. The corruptions are the tests' fixtures (tests/test_audit_screening.py); nothing
is fitted to them, only the settings above were chosen by these numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from radsynth.audit.neighbours import nearest_real
from radsynth.core.atomic import atomic_output
from radsynth.core.settings.audit import ScreenSettings
from radsynth.data.atlas import atlas_digest

FORMAT = "radsynth-plausibility/1"
#: Images per scoring block: bounds memory (block x grid x descriptor float64), not results.
SCORE_BLOCK = 512


# ----------------------------------------------------------------------------- features


def check_images(images: np.ndarray, settings: ScreenSettings, what: str) -> np.ndarray:
    """uint8 gray images (N >= 1, H, W) at least the analysis size, or an error naming `what`."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or len(images) == 0:
        raise ValueError(
            f"{what} images must be a non-empty uint8 gray array (N, H, W), "
            f"got {images.dtype} {images.shape}"
        )
    if min(images.shape[1:]) < settings.analysis_size:
        raise ValueError(
            f"{what} images are {images.shape[2]}x{images.shape[1]}, smaller than the screen's "
            f"analysis size {settings.analysis_size}"
        )
    return images


def layout_maps(images: np.ndarray, settings: ScreenSettings) -> np.ndarray:
    """float32 (N, orientation_bins + 1, grid, grid): signed gradient-orientation energies and grey
    level per cell of the standardized, area-averaged image."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).unsqueeze(1) / 255.0
    x = torch.nn.functional.adaptive_avg_pool2d(x, settings.analysis_size)
    x = (x - x.mean(dim=(2, 3), keepdim=True)) / x.std(dim=(2, 3), keepdim=True).clamp_min(
        1.0 / 255.0
    )
    gx = torch.nn.functional.pad(x[..., :, 2:] - x[..., :, :-2], (1, 1, 0, 0))
    gy = torch.nn.functional.pad(x[..., 2:, :] - x[..., :-2, :], (0, 0, 1, 1))
    width = 2 * math.pi / settings.orientation_bins
    centres = torch.arange(settings.orientation_bins, dtype=torch.float32).view(1, -1, 1, 1) * width
    offset = torch.remainder(torch.atan2(gy, gx) - centres + math.pi, 2 * math.pi) - math.pi
    energy = torch.clamp(1 - offset.abs() / width, min=0.0) * torch.sqrt(gx**2 + gy**2)
    return torch.nn.functional.avg_pool2d(torch.cat([energy, x], dim=1), settings.cell).numpy()


def blocked_layout_maps(images: np.ndarray, settings: ScreenSettings) -> np.ndarray:
    """`layout_maps` SCORE_BLOCK images at a time: float copies of full-size images stay small."""
    return np.concatenate(
        [
            layout_maps(images[first : first + SCORE_BLOCK], settings)
            for first in range(0, len(images), SCORE_BLOCK)
        ]
    )


def local_descriptors(maps: np.ndarray, neighbourhood: int) -> np.ndarray:
    """float64 (N, grid * grid, channels * (2 * neighbourhood + 1)^2): each cell with its
    neighbours (zeros beyond the border), cells in row-major order."""
    n, channels, grid, _ = maps.shape
    side = 2 * neighbourhood + 1
    padded = np.pad(
        maps.astype(np.float64), ((0, 0), (0, 0), (neighbourhood,) * 2, (neighbourhood,) * 2)
    )
    windows = np.stack(
        [padded[:, :, dy : dy + grid, dx : dx + grid] for dy in range(side) for dx in range(side)],
        axis=2,
    )
    return np.ascontiguousarray(
        windows.reshape(n, channels * side * side, grid * grid).transpose(0, 2, 1)
    )


# ----------------------------------------------------------------------------- local Gaussians


@dataclass(frozen=True)
class LocalGaussians:
    mean: np.ndarray  # (cells, D)
    precision: np.ndarray  # (cells, D, D): inverse of the shrunk covariance


def fit_gaussians(descriptors: np.ndarray, shrinkage: float) -> LocalGaussians:
    """One Gaussian per grid cell; covariance + shrinkage * (its mean variance) * identity."""
    mean = descriptors.mean(axis=0)
    centred = np.ascontiguousarray(
        (descriptors - mean).transpose(1, 0, 2)
    )  # (cells, N, D): batched per cell
    covariance = centred.transpose(0, 2, 1) @ centred / (len(descriptors) - 1)
    scale = np.trace(covariance, axis1=1, axis2=2) / covariance.shape[1]
    covariance += (
        shrinkage
        * np.maximum(scale, np.finfo(float).tiny)[:, None, None]
        * np.eye(covariance.shape[1])
    )
    return LocalGaussians(mean, np.linalg.inv(covariance))


def cell_distances(gaussians: LocalGaussians, descriptors: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance (N, cells) of every cell's descriptor to its real Gaussian."""
    centred = np.ascontiguousarray((descriptors - gaussians.mean).transpose(1, 0, 2))
    return ((centred @ gaussians.precision) * centred).sum(axis=2).T


def out_of_fold_atypicality(descriptors: np.ndarray, settings: ScreenSettings) -> np.ndarray:
    """Each real image's atypicality under Gaussians fitted on the other folds."""
    folds = (
        np.random.default_rng(settings.calibration_seed).permutation(len(descriptors))
        % settings.calibration_folds
    )
    atypicality = np.empty(len(descriptors))
    for fold in range(settings.calibration_folds):
        held = folds == fold
        gaussians = fit_gaussians(descriptors[~held], settings.shrinkage)
        atypicality[held] = cell_distances(gaussians, descriptors[held]).max(axis=1)
    return atypicality


# ----------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Scores:
    """Per image: atypicality, plausibility, where it is least real-like, and its nearest real
    image."""

    atypicality: np.ndarray
    plausibility: np.ndarray
    atypical_x: np.ndarray  # centre of the least real-like cell, fraction of the width (0 = left)
    atypical_y: np.ndarray  # ... of the height (0 = top)
    nearest_real_id: list[str]
    nearest_real_similarity: np.ndarray


@dataclass(frozen=True)
class PlausibilityModel:
    """The fitted screen: what `score` needs, and the description saved beside it."""

    settings: ScreenSettings
    gaussians: LocalGaussians
    real_atypicality: np.ndarray  # out-of-fold, sorted ascending
    real_features: (
        np.ndarray
    )  # (n_real, grid * grid * channels) float32, the real mean grid subtracted
    feature_mean: np.ndarray  # the real mean grid, flattened
    real_ids: tuple[str, ...]
    description: dict[str, Any]  # what it was fitted on, settings, provenance (JSON-serialisable)

    def plausibility(self, atypicality: np.ndarray) -> np.ndarray:
        """Fraction of real images whose out-of-fold atypicality is at least `atypicality`."""
        at_least = len(self.real_atypicality) - np.searchsorted(
            self.real_atypicality, atypicality, side="left"
        )
        return at_least / len(self.real_atypicality)

    def score(self, images: np.ndarray, *, chunk_size: int) -> Scores:
        """Score left-facing uint8 images (N, H, W); `chunk_size` bounds the nearest-real
        search's memory."""
        images = check_images(images, self.settings, "synthetic")
        atypicality, worst, features = [], [], []
        for first in range(0, len(images), SCORE_BLOCK):
            maps = layout_maps(images[first : first + SCORE_BLOCK], self.settings)
            distances = cell_distances(
                self.gaussians, local_descriptors(maps, self.settings.neighbourhood)
            )
            atypicality.append(distances.max(axis=1))
            worst.append(distances.argmax(axis=1))
            features.append(maps.reshape(len(maps), -1) - self.feature_mean)
        atypicality, worst = np.concatenate(atypicality), np.concatenate(worst)
        grid = self.settings.grid
        index, similarity = nearest_real(
            self.real_features, np.concatenate(features), chunk_size=chunk_size
        )
        return Scores(
            atypicality=atypicality,
            plausibility=self.plausibility(atypicality),
            atypical_x=(worst % grid + 0.5) / grid,
            atypical_y=(worst // grid + 0.5) / grid,
            nearest_real_id=[self.real_ids[i] for i in index],
            nearest_real_similarity=similarity,
        )


def fit_plausibility(
    real_images: np.ndarray,
    real_ids: Sequence[str],
    *,
    settings: ScreenSettings,
    fitted_on: Mapping[str, Any],
) -> PlausibilityModel:
    """Fit the screen on left-facing real images. `fitted_on` says what they are (atlas path, how
    they were oriented); the images' digest, count and the settings are added to the description."""
    real_images = check_images(real_images, settings, "real")
    if len(real_ids) != len(real_images) or len(set(real_ids)) != len(real_ids):
        raise ValueError(
            f"need one unique id per real image; got {len(set(real_ids))} unique ids "
            f"for {len(real_images)} images"
        )
    if len(real_images) < 2 * settings.calibration_folds:
        raise ValueError(
            f"{len(real_images)} real images cannot fill {settings.calibration_folds} "
            "calibration folds of at least 2 images"
        )
    maps = blocked_layout_maps(real_images, settings)
    descriptors = local_descriptors(maps, settings.neighbourhood)
    flat = maps.reshape(len(maps), -1)
    feature_mean = flat.mean(axis=0)
    description = {
        "format": FORMAT,
        "fitted_on": dict(fitted_on),
        "n_real": len(real_images),
        "real_images_digest": atlas_digest(np.ascontiguousarray(real_images), list(real_ids)),
        "real_image_size": list(real_images.shape[1:]),
        "settings": settings.model_dump(mode="json"),
        "plausibility": "fraction of the real images whose out-of-fold atypicality is at least "
        "the image's; higher = more plausible",
    }
    return PlausibilityModel(
        settings=settings,
        gaussians=fit_gaussians(descriptors, settings.shrinkage),
        real_atypicality=np.sort(out_of_fold_atypicality(descriptors, settings)),
        real_features=(flat - feature_mean).astype(np.float32),
        feature_mean=feature_mean,
        real_ids=tuple(real_ids),
        description=description,
    )


def save_model(model: PlausibilityModel, path: Path) -> None:
    """A compressed npz: the arrays, and the description (settings included) as JSON text."""
    with atomic_output(Path(path)) as temporary, temporary.open("wb") as handle:
        np.savez_compressed(
            handle,
            description=np.array(json.dumps(model.description, sort_keys=True)),
            mean=model.gaussians.mean,
            precision=model.gaussians.precision,
            real_atypicality=model.real_atypicality,
            real_features=model.real_features,
            feature_mean=model.feature_mean,
            real_ids=np.array(model.real_ids, dtype=str),
        )


def load_model(path: Path) -> PlausibilityModel:
    """A model written by `save_model`; another file fails naming it."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
        description = json.loads(str(arrays["description"]))
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: not a readable plausibility model ({exc})") from exc
    if description.get("format") != FORMAT:
        raise ValueError(f"{path}: format {description.get('format')!r} is not {FORMAT!r}")
    return PlausibilityModel(
        settings=ScreenSettings.model_validate(description["settings"]),
        gaussians=LocalGaussians(arrays["mean"], arrays["precision"]),
        real_atypicality=arrays["real_atypicality"],
        real_features=arrays["real_features"],
        feature_mean=arrays["feature_mean"],
        real_ids=tuple(str(i) for i in arrays["real_ids"]),
        description=description,
    )


# ----------------------------------------------------------------------------- intensity


def intensity_statistics(images: np.ndarray) -> pd.DataFrame:
    """Grey-level mean, standard deviation and 1st/99th percentiles (0-255) per image: blank,
    saturated or washed-out samples stand out here before anyone looks."""
    blocks = []
    for first in range(0, len(images), SCORE_BLOCK):
        flat = (
            np.asarray(images[first : first + SCORE_BLOCK])
            .reshape(-1, images[0].size)
            .astype(np.float64)
        )
        p01, p99 = np.percentile(flat, [1, 99], axis=1)
        blocks.append(
            pd.DataFrame(
                {"mean": flat.mean(axis=1), "std": flat.std(axis=1), "p01": p01, "p99": p99}
            )
        )
    return pd.concat(blocks, ignore_index=True)
