"""The memorization audit: the real x synthetic pairs most alike, written out for people to review.

As the paper: all real and synthetic images embedded through imagededup (`encoders`), the `top`
most cosine-similar real x synthetic pairs found without an all-vs-all matrix (`neighbours`),
written best first to `out_dir/pairs.csv` with MediSyn's patch distance of each pair and its
flags at `FLAG_THRESHOLDS`, and shown side by side, real | synthetic, `PAIRS_PER_PAGE` pairs to
a page in `out_dir/pairs_pageNN.png`. Beside them, `out_dir/nearest_real.csv` gives every
synthetic image its most similar real image and their patch distance: the release's privacy
gate reads it, so no packaged image escapes the check by being outside the top pairs. Every row, the
CSV's provenance and every page name the
encoder, so the offline fallback's pairs are never taken for the paper's ViT pairs.

The real images' embeddings can be cached: `cache_dir/real_embeddings_<images>_<encoder>.npz`,
keyed by `radsynth.data.atlas.atlas_digest` of the real images and ids and by the encoder
description's digest; a cache file recording other inputs fails naming the file.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from radsynth.audit.encoders import AuditEncoder, encode
from radsynth.audit.neighbours import nearest_real, top_pairs
from radsynth.audit.patch_distance import FLAG_THRESHOLDS, check_pairs, flag_column, patch_distances
from radsynth.audit.scoring import left_facing_atlas, left_facing_sample_set
from radsynth.core.atomic import atomic_output
from radsynth.core.figures import save_figure
from radsynth.core.tables import write_table
from radsynth.data.atlas import atlas_digest

log = logging.getLogger(__name__)

#: Every synthetic image's nearest real image, for the release's privacy gate.
NEAREST_REAL_NAME = "nearest_real.csv"
#: Pairs per montage page: ten rows stay legible at 256 px per image.
PAIRS_PER_PAGE = 10
#: Pixel gap between the real and the synthetic image of a montage row.
GAP = 8
#: Resolution of the montage pages.
DPI = 110


def check_image_set(images: np.ndarray, ids: Sequence[str], what: str) -> np.ndarray:
    """uint8 gray images (N >= 1, H, W) with N unique ids, or an error naming `what`."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or len(images) == 0:
        raise ValueError(
            f"{what} images must be a non-empty uint8 gray array (N, H, W), "
            f"got {images.dtype} {images.shape}"
        )
    if len(ids) != len(images):
        raise ValueError(f"{what}: {len(ids)} ids for {len(images)} images")
    seen: set[str] = set()
    for image_id in ids:
        if image_id in seen:
            raise ValueError(f"{what}: image id {image_id!r} appears more than once")
        seen.add(image_id)
    return images


def embeddings_cache_path(cache_dir: Path, images_digest: str, encoder: AuditEncoder) -> Path:
    return (
        Path(cache_dir)
        / f"real_embeddings_{images_digest[:16]}_{encoder.description.digest()[:16]}.npz"
    )


def real_embeddings(
    images: np.ndarray, ids: Sequence[str], encoder: AuditEncoder, cache_dir: Path | None
) -> np.ndarray:
    """The real images' embeddings, read from `cache_dir` when it holds these images and this
    encoder."""
    if cache_dir is None:
        return encode(encoder, images)
    key = {
        "images": atlas_digest(np.ascontiguousarray(images), list(ids)),
        "encoder": encoder.description.as_dict(),
    }
    path = embeddings_cache_path(cache_dir, key["images"], encoder)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as stored:
                stored_key, embeddings = json.loads(str(stored["key"])), stored["embeddings"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise ValueError(
                f"{path}: unreadable cached embeddings ({exc!r}); remove the file"
            ) from exc
        if stored_key != key:
            raise ValueError(
                f"{path}: cached embeddings record {stored_key}, not {key}; remove the file"
            )
        log.info("real-image embeddings from %s", path)
        return embeddings
    embeddings = encode(encoder, images)
    with atomic_output(path) as temporary, open(temporary, "wb") as stream:
        np.savez(stream, embeddings=embeddings, key=np.array(json.dumps(key, sort_keys=True)))
    return embeddings


def pairs_table(
    pairs: pd.DataFrame,
    real_images: np.ndarray,
    real_ids: Sequence[str],
    synthetic_images: np.ndarray,
    synthetic_ids: Sequence[str],
    encoder: AuditEncoder,
) -> pd.DataFrame:
    """The CSV's rows: ids, similarity, patch distance and its flags, and the encoder, best
    first."""
    real_index, synthetic_index = (
        pairs["real_index"].to_numpy(),
        pairs["synthetic_index"].to_numpy(),
    )
    distance = patch_distances(real_images[real_index], synthetic_images[synthetic_index])
    table = pd.DataFrame(
        {
            "rank": pairs["rank"].to_numpy(),
            "real_id": [real_ids[i] for i in real_index],
            "synthetic_id": [synthetic_ids[i] for i in synthetic_index],
            "similarity": pairs["similarity"].to_numpy(),
            "patch_distance": distance,
        }
    )
    for threshold in FLAG_THRESHOLDS:
        table[flag_column(threshold)] = distance <= threshold
    table["encoder"] = encoder.description.name
    table["encoder_weights"] = encoder.description.weights
    return table


def nearest_real_table(
    real: np.ndarray,
    synthetic: np.ndarray,
    real_images: np.ndarray,
    real_ids: Sequence[str],
    synthetic_images: np.ndarray,
    synthetic_ids: Sequence[str],
    *,
    chunk_size: int,
) -> pd.DataFrame:
    """One row per synthetic image, in input order: its most cosine-similar real image and the
    patch distance between the two."""
    index, similarity = nearest_real(real, synthetic, chunk_size=chunk_size)
    return pd.DataFrame(
        {
            "image_id": list(synthetic_ids),
            "nearest_real_id": [real_ids[i] for i in index],
            "similarity": similarity.astype(np.float64).round(6),
            "patch_distance": patch_distances(real_images[index], synthetic_images).round(6),
        }
    )


def side_by_side(real: np.ndarray, synthetic: np.ndarray) -> np.ndarray:
    """real | white gap | synthetic, as one uint8 image."""
    gap = np.full((real.shape[0], GAP), 255, dtype=np.uint8)
    return np.hstack([real, gap, synthetic])


def caption(row: pd.Series) -> str:
    return (
        f"#{row['rank']}  real {row['real_id']} | synthetic {row['synthetic_id']}\n"
        f"cosine {row['similarity']:.4f}  patch L2 {row['patch_distance']:.3f}"
    )


def write_montage_pages(
    table: pd.DataFrame,
    real_images: np.ndarray,
    synthetic_images: np.ndarray,
    real_index: np.ndarray,
    synthetic_index: np.ndarray,
    out_dir: Path,
    *,
    encoder: AuditEncoder,
    provenance: Mapping[str, str],
) -> list[Path]:
    """`PAIRS_PER_PAGE` rows a page, real left and synthetic right, each captioned with its
    numbers."""
    pages = []
    n_pages = -(-len(table) // PAIRS_PER_PAGE)
    for stale in sorted(Path(out_dir).glob("pairs_page*.png"))[
        n_pages:
    ]:  # left by an earlier, longer audit
        stale.unlink()
    for page in range(n_pages):
        rows = range(page * PAIRS_PER_PAGE, min(len(table), (page + 1) * PAIRS_PER_PAGE))
        figure = Figure(figsize=(5.0, 2.6 * len(rows) + 0.6), layout="constrained")
        figure.suptitle(
            f"memorization audit, page {page + 1} of {n_pages}: real | synthetic\n"
            f"encoder: {encoder.description.name}",
            fontsize=7,
        )
        for axes, row in zip(figure.subplots(len(rows), 1, squeeze=False)[:, 0], rows):
            axes.imshow(
                side_by_side(real_images[real_index[row]], synthetic_images[synthetic_index[row]]),
                cmap="gray",
                vmin=0,
                vmax=255,
            )
            axes.set_title(caption(table.iloc[row]), fontsize=7)
            axes.set_axis_off()
        pages.append(
            save_figure(
                figure,
                Path(out_dir) / f"pairs_page{page + 1:02d}.png",
                title=f"memorization audit page {page + 1}",
                provenance=provenance,
                dpi=DPI,
            )
        )
    return pages


def memorization_audit(
    real_images: np.ndarray,
    real_ids: Sequence[str],
    synthetic_images: np.ndarray,
    synthetic_ids: Sequence[str],
    encoder: AuditEncoder,
    *,
    top: int,
    chunk_size: int,
    out_dir: Path,
    provenance: Mapping[str, str],
    cache_dir: Path | None = None,
) -> pd.DataFrame:
    """Audit uint8 gray synthetic images (M, H, W) against real ones (N, H, W); write
    out_dir/pairs.csv,
    the montage pages and out_dir/nearest_real.csv, and return the pairs table (best pair first)."""
    if top < 1 or chunk_size < 1:
        raise ValueError(f"top and chunk_size must be at least 1, got {top} and {chunk_size}")
    real_images = check_image_set(real_images, real_ids, "real")
    synthetic_images = check_image_set(synthetic_images, synthetic_ids, "synthetic")
    if synthetic_images.shape[1:] != real_images.shape[1:]:
        raise ValueError(
            f"synthetic images are {synthetic_images.shape[2]}x{synthetic_images.shape[1]} but the "
            f"real images are {real_images.shape[2]}x{real_images.shape[1]}"
        )
    check_pairs(
        real_images[:1], synthetic_images[:1]
    )  # sides divisible into patches: before hours of encoding
    real = real_embeddings(real_images, real_ids, encoder, cache_dir)
    synthetic = encode(encoder, synthetic_images)
    pairs = top_pairs(real, synthetic, k=top, chunk_size=chunk_size)
    table = pairs_table(pairs, real_images, real_ids, synthetic_images, synthetic_ids, encoder)
    described = {
        **provenance,
        **{f"encoder_{key}": str(value) for key, value in encoder.description.as_dict().items()},
    }
    out_dir = Path(out_dir)
    write_table(table, out_dir / "pairs.csv", provenance=described)
    write_table(
        nearest_real_table(
            real,
            synthetic,
            real_images,
            real_ids,
            synthetic_images,
            synthetic_ids,
            chunk_size=chunk_size,
        ),
        out_dir / NEAREST_REAL_NAME,
        provenance=described,
    )
    write_montage_pages(
        table,
        real_images,
        synthetic_images,
        pairs["real_index"].to_numpy(),
        pairs["synthetic_index"].to_numpy(),
        out_dir,
        encoder=encoder,
        provenance=described,
    )
    return table


def audit_gathered_sets(
    atlas_h5: Path,
    classifier_path: Path,
    manifests: Sequence[Path],
    encoder: AuditEncoder,
    *,
    top: int,
    chunk_size: int,
    batch_size: int,
    out_dir: Path,
    cache_dir: Path,
    provenance: Mapping[str, str],
) -> pd.DataFrame:
    """The workflow's audit: every gathered set's left-facing samples against the atlas made
    left-facing by the same classifier (a memorized image may be a mirrored training image: the
    model trained with horizontal flips)."""
    real_images, real_ids = left_facing_atlas(atlas_h5, classifier_path, batch_size=batch_size)
    parts = [left_facing_sample_set(Path(path)) for path in manifests]
    synthetic_ids = [image for samples, _ in parts for image in samples["image_id"]]
    synthetic_images = np.concatenate([images for _, images in parts])
    log.info(
        "auditing %d synthetic images of %d sets against %d real images",
        len(synthetic_images),
        len(parts),
        len(real_images),
    )
    return memorization_audit(
        real_images,
        real_ids,
        synthetic_images,
        synthetic_ids,
        encoder,
        top=top,
        chunk_size=chunk_size,
        out_dir=out_dir,
        cache_dir=cache_dir,
        provenance={**provenance, "real": f"{atlas_h5}, left-facing by {classifier_path}"},
    )
