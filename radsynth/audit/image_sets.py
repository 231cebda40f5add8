"""A synthetic image set, read from what a user points a command at: shared by the `fid`,
`audit` and `screen` commands.

Accepted: one sampling Zarr shard store (`shardN.zarr`, as `radsynth.sample.sampler` writes it),
a folder of such stores (read together by `open_samples`, which checks they form one set), or a
folder of 8-bit grayscale PNG files. Anything else fails naming the path: scores of images
silently converted (16-bit cut to 8, colour mixed to gray) would not be what the user thinks.

Each image has an id: the file stem for PNG files; `radsynth.sample.store.image_id` of the
store's `checkpoint` attribute and the global index for Zarr stores (the workflow's stores
record the seed label `<sample set>/<checkpoint>` there, so their ids read `large-ckpt034_000123`,
as in the gathered manifests).

In the audit stage, not in core, because core imports no stage and the stores are the sample
stage's format; the command line, outside the stages, imports it from here for `fid` as well.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from radsynth.sample.store import image_id, open_samples

#: What a synthetic-set path may be, for error messages.
EXPECTED = (
    "a sampling Zarr store (shardN.zarr), a folder of *.zarr stores "
    "or a folder of 8-bit grayscale PNG files"
)


def load_synthetic(path: Path) -> tuple[np.ndarray, str]:
    """uint8 grayscale images (N, H, W) at `path` and a one-line description of where they came
    from."""
    images, _, source = load_synthetic_with_ids(path)
    return images, source


def load_synthetic_with_ids(path: Path) -> tuple[np.ndarray, list[str], str]:
    """uint8 grayscale images (N, H, W) at `path`, their ids, and a one-line description of where
    they came from."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder; expected {EXPECTED}")
    if is_zarr_store(path):
        return load_zarr_stores([path])
    if not path.is_dir():
        raise ValueError(f"{path}: not a folder; expected {EXPECTED}")
    stores = sorted(child for child in path.iterdir() if child.suffix == ".zarr" and child.is_dir())
    pngs = png_files(path)
    if stores and pngs:
        raise ValueError(
            f"{path}: holds both *.zarr stores and PNG files; point at one kind (expected "
            f"{EXPECTED})"
        )
    if stores:
        return load_zarr_stores(stores)
    if pngs:
        return load_pngs(pngs), [png.stem for png in pngs], f"{len(pngs)} PNG files in {path}"
    raise ValueError(f"{path}: holds neither PNG files nor *.zarr stores; expected {EXPECTED}")


def is_zarr_store(path: Path) -> bool:
    """A directory named *.zarr or holding Zarr v3's zarr.json: read as a store, so a broken one
    fails with the store's own error rather than as an empty folder."""
    return path.is_dir() and (path.suffix == ".zarr" or (path / "zarr.json").is_file())


def png_files(folder: Path) -> list[Path]:
    """The folder's PNG files (any case of .png), sorted by name so the order is reproducible."""
    return sorted(
        child for child in folder.iterdir() if child.suffix.lower() == ".png" and child.is_file()
    )


def load_zarr_stores(stores: list[Path]) -> tuple[np.ndarray, list[str], str]:
    """All images of complete shard stores of one checkpoint, in global-index order, with their
    ids."""
    samples = open_samples(stores)
    images = samples.images(samples.global_indices)
    label = samples.attrs.get("checkpoint")
    if not isinstance(label, str):
        raise ValueError(
            f"{stores[0]}: sample store has no checkpoint label (attribute 'checkpoint')"
        )
    ids = [image_id(label, int(index)) for index in samples.global_indices]
    where = (
        str(stores[0]) if len(stores) == 1 else f"{len(stores)} Zarr stores in {stores[0].parent}"
    )
    return images, ids, f"{len(images)} images of checkpoint {label} from {where}"


def load_pngs(files: list[Path]) -> np.ndarray:
    """The PNGs as one (N, H, W) uint8 array; all must be mode "L" and of the first file's size."""
    first = read_gray_png(files[0])
    images = np.empty((len(files), *first.shape), dtype=np.uint8)
    images[0] = first
    for index, file in enumerate(files[1:], start=1):
        image = read_gray_png(file)
        if image.shape != first.shape:
            raise ValueError(
                f"{file}: {size_text(image)} differs from {size_text(first)} of {files[0]}; "
                f"all PNG files must share one size"
            )
        images[index] = image
    return images


def read_gray_png(file: Path) -> np.ndarray:
    """One 8-bit grayscale PNG; any other mode is refused, never converted."""
    try:
        with Image.open(file) as image:
            image_format, mode = image.format, image.mode
            pixels = np.asarray(image) if (image_format, mode) == ("PNG", "L") else None
    except OSError as exc:  # PIL's UnidentifiedImageError and truncated files are OSErrors
        raise ValueError(f"{file}: unreadable PNG file ({exc})") from exc
    if image_format != "PNG":
        raise ValueError(f"{file}: not a PNG file (PIL reads it as {image_format})")
    if mode != "L":
        raise ValueError(
            f"{file}: PNG mode {mode!r}, expected 8-bit grayscale 'L' "
            f"(16-bit, colour, alpha and palette images are not converted)"
        )
    return pixels


def size_text(image: np.ndarray) -> str:
    """Width x height, as image viewers say it."""
    return f"{image.shape[1]}x{image.shape[0]}"
