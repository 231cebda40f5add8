"""The resumable work store a shard is sampled into.

The paper sampled about 27,000 images from three checkpoints in jobs capped at 24 hours, so a
sampling job must survive being killed: it writes into a work store outside the declared output
(Snakemake deletes declared outputs before rerunning a job), marks each batch done only after its
images are written, and on rerun verifies the finished batches against their SHA-256 and continues
with the rest. The finished store is renamed into place in one step.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr

from radsynth.sample.seeds import image_seed
from radsynth.sample.store import STORE_FORMAT, read_store_attrs

log = logging.getLogger(__name__)

#: Files zarr's LocalStore writes before renaming them into place; a SIGKILL can leave them behind.
_INTERRUPTED_WRITE = re.compile(r"\.[0-9a-f]{32}\.partial$")


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


def work_store_path(out_store: Path, work_dir: Path) -> Path:
    return Path(work_dir) / f"{Path(out_store).name}.partial"


def store_path(group: zarr.Group) -> Path:
    """The directory of a group opened from a local path (for messages and the final rename)."""
    return Path(group.store.root)


def require_finished_output(out_store: Path, request: ShardRequest) -> None:
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
                f"{store}: was made with {key}={attrs.get(key)!r} "
                f"but this run asks for {key}={wanted!r}; "
                f"delete {store} to start that shard over"
            )


def open_work_store(
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
    """Build the empty store next to its final name, then rename: a kill never leaves half a
    layout."""
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
    """done: marked done and reads back with its stored checksum; damaged: marked done but it
    does not.

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


def write_batch(
    group: zarr.Group, request: ShardRequest, batch: int, images: np.ndarray, seeds: np.ndarray
) -> None:
    """Images, seeds and checksum first, the done flag last; a failed write names the batch and
    what survives."""
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
                f"{store_path(group)}: writing batch {batch} "
                f"(global images {global_indices[0]}..{global_indices[-1]}) failed: {reason}; "
                f"the {n_done} finished batch(es) stay marked done and are reused when the job "
                "is rerun"
            ),
        ) from exc


def promote(group: zarr.Group, out_store: Path) -> Path:
    """Mark the store complete, then rename it to the declared output (atomic on one filesystem)."""
    group.update_attributes({"complete": True})
    work = store_path(group)
    os.replace(work, out_store)
    log.info("%s: complete, moved to %s", work, out_store)
    return out_store
