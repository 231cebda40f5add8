"""FID, KID and precision/recall/density/coverage of a synthetic image set against the atlas.

Each image set goes through the extractor once; FID (`radsynth.core.frechet`) and KID are then
computed by torchmetrics and PRDC by the `prdc` package, all from the same features (torchmetrics
receives them through a pass-through feature module, so it does its own statistics on exactly
these numbers).

The atlas' features are cached per atlas content and extractor: `cache_dir/real_features_
<atlas digest>_<extractor digest>.npz`, keyed by `radsynth.data.atlas.atlas_digest` (image bytes
and source names) and `ExtractorDescription.digest()`. Another atlas or extractor has another
key, so a changed atlas is extracted anew; old cache files are left in place.

Problems that leave a number defined but doubtful are recorded in the row's `warnings`, never a
silent NaN: fewer images than feature dimensions (singular covariance: FID unstable), too few
images for PRDC's k-nearest-neighbour balls (PRDC left NaN), a non-finite FID.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import prdc
import torch
from torchmetrics.image.kid import KernelInceptionDistance

from radsynth.core.atomic import atomic_output
from radsynth.core.features import ExtractorDescription, FeatureExtractor, extract_features
from radsynth.core.frechet import PassThrough, frechet_distance
from radsynth.data.atlas import atlas_digest, load_atlas

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FidelityRow:
    """One table row: a synthetic set against the atlas, with the extractor that made the
    features."""

    n_real: int
    n_synthetic: int
    extractor: ExtractorDescription
    atlas_digest: str
    fid: float
    kid_mean: float
    kid_std: float
    kid_subsets: int
    kid_subset_size: int
    precision: float
    recall: float
    density: float
    coverage: float
    prdc_k: int
    warnings: tuple[str, ...] = field(default=())

    def as_record(self) -> dict[str, object]:
        """Flat columns for a table: the extractor's fields as `extractor_*`, warnings joined by
        '; ', and NaN as None (JSON has no NaN; the warnings say why a number is missing)."""
        record: dict[str, object] = {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if name not in ("extractor", "warnings")
        }
        record = {
            name: None if isinstance(value, float) and not math.isfinite(value) else value
            for name, value in record.items()
        }
        record.update(
            {f"extractor_{key}": value for key, value in self.extractor.as_dict().items()}
        )
        record["warnings"] = "; ".join(self.warnings)
        return record


def check_images(images: np.ndarray, what: str) -> None:
    """uint8 grayscale (N, H, W) with N >= 2 (a covariance needs two images), or an error naming
    `what`."""
    if images.ndim != 3:
        raise ValueError(
            f"{what}: images must be grayscale (N, H, W), got shape {images.shape} "
            f"(a channel axis is not accepted)"
        )
    if images.dtype != np.uint8:
        raise ValueError(f"{what}: images must be uint8, got {images.dtype}")
    if len(images) < 2:
        raise ValueError(f"{what}: {len(images)} image(s); FID, KID and PRDC need at least 2")


def kernel_distance(
    real: np.ndarray, synthetic: np.ndarray, *, subsets: int, subset_size: int, seed: int
) -> tuple[float, float]:
    """torchmetrics' KID (mean, std over `subsets` random subsets of `subset_size`), subsets drawn
    from `seed`."""
    with warnings.catch_warnings():
        # it warns that it keeps all features in memory: so do we, by design
        warnings.filterwarnings(
            "ignore", message="Metric `Kernel Inception Distance` will save all"
        )
        metric = KernelInceptionDistance(
            feature=PassThrough(real.shape[1]),
            subsets=subsets,
            subset_size=subset_size,
            reset_real_features=False,
            normalize=False,
        )
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(synthetic), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def prdc_metrics(real: np.ndarray, synthetic: np.ndarray, *, nearest_k: int) -> dict[str, float]:
    """prdc's precision, recall, density and coverage (Naeem et al. 2020); its progress print goes
    to the log. NaN when a set has fewer than k + 2 images (prdc partitions at k + 1; recorded as a
    warning by `sample_size_warnings`)."""
    if min(len(real), len(synthetic)) < nearest_k + 2:
        return dict.fromkeys(("precision", "recall", "density", "coverage"), math.nan)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        values = prdc.compute_prdc(real_features=real, fake_features=synthetic, nearest_k=nearest_k)
    log.debug("prdc: %s", printed.getvalue().strip())
    return {name: float(value) for name, value in values.items()}


def feature_cache_path(cache_dir: Path, atlas_hash: str, extractor: ExtractorDescription) -> Path:
    return Path(cache_dir) / f"real_features_{atlas_hash[:16]}_{extractor.digest()[:16]}.npz"


def read_cached_features(
    path: Path, atlas_hash: str, extractor: ExtractorDescription
) -> np.ndarray | None:
    """The cached features, None if there are none; a file recording other inputs fails naming
    it."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            key = json.loads(str(stored["key"]))
            features = stored["features"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: unreadable cached features ({exc!r}); remove the file") from exc
    expected = {"atlas_digest": atlas_hash, "extractor": extractor.as_dict()}
    if key != expected:
        raise ValueError(f"{path}: cached features record {key}, not {expected}; remove the file")
    return features


def write_cached_features(
    path: Path, features: np.ndarray, atlas_hash: str, extractor: ExtractorDescription
) -> None:
    key = json.dumps({"atlas_digest": atlas_hash, "extractor": extractor.as_dict()}, sort_keys=True)
    with atomic_output(path) as temporary, open(temporary, "wb") as stream:
        np.savez(stream, features=features, key=np.array(key))


def real_features(
    images: np.ndarray,
    atlas_hash: str,
    extractor: FeatureExtractor,
    cache_dir: Path,
    *,
    batch_size: int,
) -> np.ndarray:
    """The atlas images' features, from the cache when it holds this atlas and extractor."""
    path = feature_cache_path(cache_dir, atlas_hash, extractor.description)
    cached = read_cached_features(path, atlas_hash, extractor.description)
    if cached is not None:
        log.info("real-image features from %s", path)
        return cached
    features = extract_features(extractor, images, batch_size=batch_size)
    write_cached_features(path, features, atlas_hash, extractor.description)
    log.info("real-image features of %d atlas images cached in %s", len(images), path)
    return features


@dataclass(frozen=True)
class AtlasFeatures:
    """The atlas' features with what they were computed from."""

    features: np.ndarray
    digest: str
    image_shape: tuple[int, ...]
    cache_file: Path


def atlas_features(
    atlas_path: Path,
    extractor: FeatureExtractor,
    cache_dir: Path,
    *,
    batch_size: int,
) -> AtlasFeatures:
    """Features of every atlas image, computed once per atlas content and extractor (then
    cached)."""
    with load_atlas(Path(atlas_path)) as atlas:
        images, source_names = np.ascontiguousarray(atlas.images), atlas.source_names
    check_images(images, f"atlas {atlas_path}")
    digest = atlas_digest(images, source_names)
    features = real_features(images, digest, extractor, cache_dir, batch_size=batch_size)
    return AtlasFeatures(
        features,
        digest,
        images.shape[1:],
        feature_cache_path(cache_dir, digest, extractor.description),
    )


def sample_size_warnings(
    n_real: int,
    n_synthetic: int,
    num_features: int,
    nearest_k: int,
    atlas_name: str,
    synthetic_name: str,
) -> list[str]:
    """Warnings for sets too small for a stable covariance or for PRDC's k-NN balls."""
    found = []
    for name, n in ((atlas_name, n_real), (synthetic_name, n_synthetic)):
        if n < num_features:
            found.append(
                f"{name}: {n} images < {num_features} feature dimensions: "
                f"its covariance is singular, FID is unstable"
            )
        if n < nearest_k + 2:
            found.append(
                f"{name}: {n} images; PRDC with k={nearest_k} needs at least {nearest_k + 2} "
                f"(prdc partitions at k + 1): precision, recall, density, coverage left NaN"
            )
    return found


def fidelity_row(
    synthetic: np.ndarray,
    atlas_path: Path,
    extractor: FeatureExtractor,
    cache_dir: Path,
    *,
    synthetic_name: str,
    kid_subsets: int,
    kid_subset_size: int,
    kid_seed: int,
    nearest_k: int,
    batch_size: int,
) -> FidelityRow:
    """FID, KID and PRDC of uint8 synthetic images (N, H, W) against the atlas at `atlas_path`.

    `synthetic_name` (e.g. the sample manifest's path) names the synthetic set in errors and
    warnings. The KID subset size is min(kid_subset_size, n_real, n_synthetic).
    """
    synthetic = np.asarray(synthetic)
    synthetic_label, atlas_label = f"synthetic set {synthetic_name}", f"atlas {atlas_path}"
    check_images(synthetic, synthetic_label)
    atlas = atlas_features(atlas_path, extractor, cache_dir, batch_size=batch_size)
    if atlas.image_shape != synthetic.shape[1:]:
        raise ValueError(
            f"{synthetic_label}: images are {synthetic.shape[1]}x{synthetic.shape[2]} but the "
            f"{atlas_label} images are {atlas.image_shape[0]}x{atlas.image_shape[1]}"
        )
    real, atlas_hash = atlas.features, atlas.digest
    fake = extract_features(extractor, synthetic, batch_size=batch_size)
    found = sample_size_warnings(
        len(real), len(fake), extractor.num_features, nearest_k, atlas_label, synthetic_label
    )
    fid = frechet_distance(real, fake)
    if not math.isfinite(fid):
        found.append(f"{synthetic_label}: FID is {fid}")
    subset_size = min(kid_subset_size, len(real), len(fake))
    kid_mean, kid_std = kernel_distance(
        real, fake, subsets=kid_subsets, subset_size=subset_size, seed=kid_seed
    )
    prd = prdc_metrics(real, fake, nearest_k=nearest_k)
    for message in found:
        log.warning(message)
    return FidelityRow(
        n_real=len(real),
        n_synthetic=len(fake),
        extractor=extractor.description,
        atlas_digest=atlas_hash,
        fid=fid,
        kid_mean=kid_mean,
        kid_std=kid_std,
        kid_subsets=kid_subsets,
        kid_subset_size=subset_size,
        precision=prd["precision"],
        recall=prd["recall"],
        density=prd["density"],
        coverage=prd["coverage"],
        prdc_k=nearest_k,
        warnings=tuple(found),
    )
