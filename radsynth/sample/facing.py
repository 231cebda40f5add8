"""Facing detection: which way a lateral cervical-spine radiograph faces, and the flip to
left-facing.

Why: the paper (section 2.3) standardized every synthetic image to left-facing (anterior, i.e.
face, airway and the front of the vertebral bodies, on the left of the image). The DDPM was
trained with random horizontal flips, so its samples face either way, and they carry no
keypoints. A small CNN decides the facing of any image. It is trained on the real atlas.

Labels for the real images. CSXA's corner names ("C3 top left", ...) follow image x, not
anatomy, so the keypoints alone do not say which side is anterior. Keypoint-only cues fail too:
on the demo phantoms, "C7 lies posterior to C2" is right for 74-78% of images and "anterior
body wall shorter" for 77-79% (curvature, posture and wedging vary too much). So the rule looks
at the image where the keypoints point. Just behind each vertebral body lie bone (pedicles,
articular pillars, laminae); just in front lie the prevertebral soft tissue and the airway. In a
positive film (bone bright, as the preprocessed atlas stores every image) the posterior band is
therefore brighter than the anterior one. For each of C3..C7 the rule compares the mean grey
value of two bands along the body's side walls. Each band reaches from `band_start` to
`band_stop` body depths out from the wall. The contrast (right band minus left band, averaged
over the levels) is positive when the bright posterior side is on the right, which means the
image faces left. Weak contrast or too few annotated levels give no label (""). Such images are
left out of training, and the report counts and names them.

The classifier is mirror-antisymmetric by construction: logit_left(x) = h(x) - h(mirror(x)).
Mirroring an image therefore always flips its prediction, and the loss of (x, "left") equals
that of (mirror(x), "right"). Training on an image thus also trains on its mirror, which keeps
the two classes exactly balanced whatever the atlas's facing mix.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from radsynth.core.atomic import atomic_output, write_json_atomic
from radsynth.core.config import load_settings
from radsynth.core.settings.sample import Architecture, FacingSettings, LabelRule
from radsynth.data.atlas import load_atlas
from radsynth.data.csxa import KEYPOINT_LABELS
from radsynth.data.split import read_subsets

LEFT, RIGHT, UNKNOWN = "left", "right", ""
#: The levels whose four body corners CSXA annotates (C2 has only its lower corners).
CORNER_LEVELS: tuple[str, ...] = ("C3", "C4", "C5", "C6", "C7")
FORMAT = "radsynth-facing-classifier/1"


# ----------------------------------------------------------------------------- settings


def settings_from_config(section: Mapping[str, Any]) -> FacingSettings:
    """The `facing` config section as settings; every bad key is named in one ConfigError."""
    return load_settings(FacingSettings, section, "facing")


def settings_to_config(settings: FacingSettings) -> dict[str, Any]:
    """The inverse of settings_from_config: the `facing` section as plain JSON/YAML values."""
    return settings.model_dump(mode="json")


# ----------------------------------------------------------------------------- anatomical labels


@dataclass(frozen=True)
class FacingLabels:
    """Per-image result of the anatomical rule."""

    facing: np.ndarray  # "left" | "right" | "" (unknown)
    contrast: np.ndarray  # float64, right band minus left band in grey / 255; NaN without levels
    n_levels: np.ndarray  # int, levels that entered the contrast

    @property
    def too_few_levels(self) -> np.ndarray:
        """Unlabelled because keypoints were missing (or the bands left the image)."""
        return (self.facing == UNKNOWN) & np.isnan(self.contrast)

    @property
    def weak_contrast(self) -> np.ndarray:
        """Unlabelled although enough levels were measured: the two sides looked alike."""
        return (self.facing == UNKNOWN) & ~np.isnan(self.contrast)


def _corner_index(level: str, corner: str) -> int:
    return KEYPOINT_LABELS.index(f"{level} {corner}")


def _band_quad(
    wall_top: np.ndarray,
    wall_bottom: np.ndarray,
    outward: np.ndarray,
    depth: float,
    rule: LabelRule,
) -> np.ndarray:
    """The band beside one side wall: the wall segment pushed out by band_start..band_stop
    depths."""
    near, far = rule.band_start * depth * outward, rule.band_stop * depth * outward
    return np.array([wall_top + near, wall_top + far, wall_bottom + far, wall_bottom + near])


def _quad_mean(image: np.ndarray, quad: np.ndarray) -> float | None:
    """Mean of the pixels whose centres lie in a convex quadrilateral; None if it leaves the
    image."""
    height, width = image.shape
    if (
        quad[:, 0].min() < 0
        or quad[:, 1].min() < 0
        or quad[:, 0].max() > width - 1
        or quad[:, 1].max() > height - 1
    ):
        return None
    x0, y0 = np.floor(quad.min(axis=0)).astype(int)
    x1, y1 = np.ceil(quad.max(axis=0)).astype(int)
    ys, xs = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
    edges = np.roll(quad, -1, axis=0) - quad
    cross = edges[:, None, None, 0] * (ys - quad[:, None, None, 1]) - edges[:, None, None, 1] * (
        xs - quad[:, None, None, 0]
    )
    inside = (cross >= 0).all(axis=0) | (cross <= 0).all(axis=0)
    if not inside.any():
        return None
    return float(image[y0 : y1 + 1, x0 : x1 + 1][inside].mean(dtype=np.float64))


def _level_contrast(
    image: np.ndarray, keypoints: np.ndarray, level: str, rule: LabelRule
) -> float | None:
    """Right band minus left band beside one vertebral body; None if a corner or a band is
    missing."""
    corners = keypoints[
        [_corner_index(level, c) for c in ("top left", "top right", "bottom left", "bottom right")]
    ]
    if not np.isfinite(corners).all():
        return None
    top_left, top_right, bottom_left, bottom_right = corners.astype(np.float64)
    across = (top_right + bottom_right - top_left - bottom_left) / 2
    depth = float(np.linalg.norm(across))
    if depth == 0.0:
        return None
    rightward = across / depth
    left = _quad_mean(image, _band_quad(top_left, bottom_left, -rightward, depth, rule))
    right = _quad_mean(image, _band_quad(top_right, bottom_right, rightward, depth, rule))
    return None if left is None or right is None else (right - left) / 255.0


def facing_labels_from_anatomy(
    images: np.ndarray, keypoints: np.ndarray, rule: LabelRule
) -> FacingLabels:
    """Label positive (bone-bright) images by the brighter (posterior, bony) side of their
    vertebral bodies, located by the keypoints; see the module docstring."""
    images, keypoints = np.asarray(images), np.asarray(keypoints)
    if images.ndim != 3 or keypoints.shape != (len(images), len(KEYPOINT_LABELS), 2):
        raise ValueError(
            f"need images (N, H, W) and keypoints (N, {len(KEYPOINT_LABELS)}, 2); "
            f"got {images.shape} and {keypoints.shape}"
        )
    facing = np.full(len(images), UNKNOWN, dtype="<U5")
    contrast = np.full(len(images), np.nan)
    n_levels = np.zeros(len(images), dtype=int)
    for i, (image, points) in enumerate(zip(images, keypoints)):
        measured = [
            c
            for c in (_level_contrast(image, points, lvl, rule) for lvl in CORNER_LEVELS)
            if c is not None
        ]
        n_levels[i] = len(measured)
        if len(measured) < rule.min_levels:
            continue
        contrast[i] = float(np.mean(measured))
        if abs(contrast[i]) >= rule.min_contrast and contrast[i] != 0.0:
            facing[i] = LEFT if contrast[i] > 0 else RIGHT
    return FacingLabels(facing, contrast, n_levels)


# ----------------------------------------------------------------------------- the classifier


class FacingNet(nn.Module):
    """h: conv blocks (3x3 conv, ReLU, 2x2 max pool), global mean, linear -> one score.
    The forward pass returns h(x) - h(mirror x), the logit of "left"."""

    def __init__(self, architecture: Architecture) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        previous = 1
        for channels in architecture.channels:
            blocks += [nn.Conv2d(previous, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            previous = channels
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(previous, 1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3))).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        both = self.score(torch.cat([x, torch.flip(x, dims=(3,))]))
        return both[: len(x)] - both[len(x) :]


def _initialise(net: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default initialisation, drawn from `generator` so the global RNG is left alone."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
            bound = 1.0 / math.sqrt(module.weight[0].numel())
            nn.init.uniform_(module.bias, -bound, bound, generator=generator)


@dataclass
class FacingClassifier:
    """A trained network with what it needs to be applied and traced."""

    net: FacingNet
    architecture: Architecture
    image_size: int
    metadata: dict[str, Any]  # training settings, accuracy, provenance (JSON-serialisable)

    def prepare(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (N, S, S) -> float32 (N, 1, A, A): area-averaged to the analysis size, then each
        image standardized to zero mean and unit spread, so exposure differences between real
        and synthetic films do not matter."""
        images = np.asarray(images)
        if (
            images.ndim != 3
            or images.shape[1:] != (self.image_size, self.image_size)
            or images.dtype != np.uint8
        ):
            raise ValueError(
                f"facing classifier expects uint8 images (N, {self.image_size}, "
                f"{self.image_size}); "
                f"got {images.dtype} {images.shape}"
            )
        x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
        x = nn.functional.adaptive_avg_pool2d(x, self.architecture.analysis_size)
        mean = x.mean(dim=(2, 3), keepdim=True)
        spread = x.std(dim=(2, 3), keepdim=True).clamp_min(1.0 / 255.0)
        return (x - mean) / spread


def new_classifier(architecture: Architecture, image_size: int, seed: int) -> FacingClassifier:
    """An untrained classifier with seeded weights."""
    if image_size < architecture.analysis_size:
        raise ValueError(
            f"image size {image_size} is below facing.classifier.analysis_size "
            f"{architecture.analysis_size}"
        )
    net = FacingNet(architecture)
    _initialise(net, torch.Generator().manual_seed(seed))
    return FacingClassifier(net, architecture, image_size, {})


def _logits(classifier: FacingClassifier, prepared: torch.Tensor, batch_size: int) -> torch.Tensor:
    classifier.net.eval()
    with torch.no_grad():
        return torch.cat(
            [
                classifier.net(prepared[i : i + batch_size])
                for i in range(0, len(prepared), batch_size)
            ]
        )


def train_facing_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    architecture: Architecture,
    seed: int,
    steps: int,
    batch_size: int,
    lr: float,
    progress: bool,
) -> FacingClassifier:
    """Fit the antisymmetric CNN to labelled images with Adam and binary cross-entropy.

    Each step draws `batch_size` images with replacement from a generator seeded by `seed`, so a
    run is a pure function of its inputs (on the CPU with a fixed thread count)."""
    labels = np.asarray(labels)
    if len(images) != len(labels) or len(labels) == 0:
        raise ValueError(
            f"need as many labels as images (> 0); got {len(labels)} labels, {len(images)} images"
        )
    if not np.isin(labels, (LEFT, RIGHT)).all():
        raise ValueError(
            f"training labels must be 'left' or 'right'; got {sorted(set(labels.tolist()))}"
        )
    images = np.asarray(images)
    classifier = new_classifier(architecture, images.shape[-1], seed)
    prepared = classifier.prepare(images)
    target = torch.from_numpy((labels == LEFT).astype(np.float32))
    optimizer = torch.optim.Adam(classifier.net.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed + 1)
    classifier.net.train()
    for _ in tqdm(range(steps), desc="facing classifier", unit="step", disable=not progress):
        rows = torch.randint(len(prepared), (batch_size,), generator=generator)
        loss = nn.functional.binary_cross_entropy_with_logits(
            classifier.net(prepared[rows]), target[rows]
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    classifier.metadata = {
        "settings": {"seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr},
        "n_training_images": int(len(labels)),
        "training_accuracy": accuracy(
            predict_facing(classifier, images, batch_size=batch_size)[0], labels
        ),
    }
    return classifier


def predict_facing(
    classifier: FacingClassifier, images: np.ndarray, *, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Facing ("left"/"right") and probability of "left" per image; exactly 0.5 (a perfectly
    mirror-symmetric image) counts as "left", so such an image is never flipped."""
    probability = (
        torch.sigmoid(_logits(classifier, classifier.prepare(images), batch_size)).double().numpy()
    )
    return np.where(probability >= 0.5, LEFT, RIGHT).astype("<U5"), probability


def accuracy(predicted: np.ndarray, expected: np.ndarray) -> float:
    """Share of equal entries (the caller passes only labelled images)."""
    return float(np.mean(np.asarray(predicted) == np.asarray(expected)))


def standardize_left(images: np.ndarray, facing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror the right-facing images so all face left (paper 2.3); returns a new array and
    which images were flipped, to be recorded per image."""
    images, facing = np.asarray(images), np.asarray(facing)
    if images.ndim != 3 or facing.shape != (len(images),):
        raise ValueError(
            f"need images (N, H, W) and one facing per image; got {images.shape} and {facing.shape}"
        )
    if not np.isin(facing, (LEFT, RIGHT)).all():
        raise ValueError(
            f"facing must be 'left' or 'right' for every image; got {sorted(set(facing.tolist()))}"
        )
    flipped = facing == RIGHT
    out = images.copy()
    out[flipped] = out[flipped][:, :, ::-1]
    return out, flipped


# ----------------------------------------------------------------------------- files


def save_classifier(classifier: FacingClassifier, path: Path) -> None:
    """Weights as safetensors; architecture, image size and metadata as JSON in its header."""
    path = Path(path)
    header = {
        "format": FORMAT,
        "image_size": str(classifier.image_size),
        "architecture": json.dumps(classifier.architecture.model_dump(mode="json")),
        "metadata": json.dumps(classifier.metadata, sort_keys=True),
    }
    tensors = {k: v.detach().contiguous().clone() for k, v in classifier.net.state_dict().items()}
    with atomic_output(path) as temporary:
        save_file(tensors, str(temporary), header)


def load_classifier(path: Path, *, image_size: int) -> FacingClassifier:
    """Read a saved classifier for images of `image_size`; a file made for another size, or not a
    facing classifier, raises an error naming it."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
    if header.get("format") != FORMAT:
        raise ValueError(f"{path}: header format {header.get('format')!r} is not {FORMAT!r}")
    stored_size = int(header["image_size"])
    if stored_size != image_size:
        raise ValueError(
            f"{path}: facing classifier was trained on {stored_size}x{stored_size} images, "
            f"but the images to classify are {image_size}x{image_size}"
        )
    stored = json.loads(header["architecture"])
    architecture = load_settings(Architecture, stored, "facing.classifier")
    net = FacingNet(architecture)
    net.load_state_dict(tensors)
    return FacingClassifier(net, architecture, stored_size, json.loads(header["metadata"]))


# ----------------------------------------------------------------------------- the stage


@dataclass(frozen=True)
class AtlasSubset:
    images: np.ndarray  # uint8 (N, S, S)
    keypoints: np.ndarray  # (N, 23, 2)
    source_names: list[str]
    n_atlas: int


def read_training_subset(atlas_h5: Path, manifest_csv: Path | None) -> AtlasSubset:
    """The atlas rows of the manifest's "train" subset (all rows without a manifest)."""
    atlas = load_atlas(atlas_h5)
    names = atlas.source_names
    rows = (
        np.arange(len(names))
        if manifest_csv is None
        else read_subsets(Path(manifest_csv), names).train
    )
    return AtlasSubset(
        atlas.images[rows], atlas.keypoints[rows], [names[i] for i in rows], len(names)
    )


def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (fit, holdout) positions; the holdout holds round(fraction * n) items, at least
    one."""
    n_holdout = max(1, int(round(fraction * n)))
    if n_holdout >= n:
        raise ValueError(
            f"{n} labelled images cannot spare {n_holdout} for "
            f"facing.training.holdout_fraction={fraction}"
        )
    order = np.random.default_rng([seed, 2]).permutation(n)
    return np.sort(order[n_holdout:]), np.sort(order[:n_holdout])


def mirror_accuracy(
    classifier: FacingClassifier, images: np.ndarray, labels: np.ndarray, batch_size: int
) -> dict[str, float]:
    """Accuracy on the images, on their mirrors (expected facing swapped) and on both together."""
    mirrored = np.where(labels == LEFT, RIGHT, LEFT)
    original = accuracy(predict_facing(classifier, images, batch_size=batch_size)[0], labels)
    mirror = accuracy(
        predict_facing(classifier, images[:, :, ::-1], batch_size=batch_size)[0], mirrored
    )
    return {"originals": original, "mirrors": mirror, "both": (original + mirror) / 2}


def train_from_atlas(
    atlas_h5: Path,
    manifest_csv: Path | None,
    out_path: Path,
    report_json: Path,
    *,
    settings: FacingSettings,
    provenance: Mapping[str, str],
    progress: bool,
) -> dict[str, Any]:
    """The facing stage: label the atlas's training images anatomically, keep a seeded holdout
    of the labelled ones, train on the rest, and write the classifier and a JSON report (also
    returned) with the label counts, the unlabelled images by name and the holdout accuracy."""
    started = time.perf_counter()
    subset = read_training_subset(atlas_h5, manifest_csv)
    labels = facing_labels_from_anatomy(subset.images, subset.keypoints, settings.label_rule)
    labelled = np.flatnonzero(labels.facing != UNKNOWN)
    if len(labelled) < 2:
        raise ValueError(
            f"{atlas_h5}: only {len(labelled)} of {len(labels.facing)} training images got a "
            "facing "
            f"label ({int(labels.too_few_levels.sum())} with too few annotated levels, "
            f"{int(labels.weak_contrast.sum())} with weak contrast)"
        )
    fit, holdout = (
        labelled[p]
        for p in holdout_split(
            len(labelled), settings.training.holdout_fraction, settings.training.seed
        )
    )
    t = settings.training
    classifier = train_facing_classifier(
        subset.images[fit],
        labels.facing[fit],
        architecture=settings.classifier,
        seed=t.seed,
        steps=t.steps,
        batch_size=t.batch_size,
        lr=t.lr,
        progress=progress,
    )
    holdout_accuracy = mirror_accuracy(
        classifier, subset.images[holdout], labels.facing[holdout], t.batch_size
    )
    classifier.metadata.update(
        {
            "holdout_accuracy": holdout_accuracy,
            "provenance": dict(provenance),
            "settings": settings_to_config(settings),
        }
    )
    names = np.array(subset.source_names)
    report = {
        "atlas": str(atlas_h5),
        "manifest": None if manifest_csv is None else str(manifest_csv),
        "n_atlas_images": subset.n_atlas,
        "n_training_subset": len(names),
        "n_labelled": int(len(labelled)),
        "n_left": int((labels.facing == LEFT).sum()),
        "n_right": int((labels.facing == RIGHT).sum()),
        "n_unlabelled_too_few_levels": int(labels.too_few_levels.sum()),
        "n_unlabelled_weak_contrast": int(labels.weak_contrast.sum()),
        "unlabelled_too_few_levels": names[labels.too_few_levels].tolist(),
        "unlabelled_weak_contrast": names[labels.weak_contrast].tolist(),
        "n_fit": int(len(fit)),
        "n_holdout": int(len(holdout)),
        "training_accuracy": classifier.metadata["training_accuracy"],
        "holdout_accuracy": holdout_accuracy,
        "seconds": round(time.perf_counter() - started, 3),
        "settings": settings_to_config(settings),
        "provenance": dict(provenance),
        "classifier": str(out_path),
    }
    save_classifier(classifier, Path(out_path))
    write_json_atomic(Path(report_json), report)
    return report
