"""The training run's files: history checkpoints (weights only), the full resume state, the loss
log, the checkpoint index and the run markers training jobs write. Later stages read them through
this module alone; the loss log and index readers check every column (errors name file, line and
column).

The loss log and the index carry no provenance lines: several jobs write one run (segments, a
resume after a kill, a raised `training.num_steps` continuing it, which changes the config hash),
so no single header could name the code and config behind every row, and a header per job would
break the promise that a continued run's files equal, byte for byte, those of a run trained that
long from the start. Each job's provenance is in the history checkpoints it wrote (their
metadata), its resume state and its run marker.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from radsynth.core.atomic import (
    atomic_output,
    publish_permissions,
    read_json_object,
    write_json_atomic,
    write_text_atomic,
)
from radsynth.core.checked_csv import (
    SOURCE_ATTR,
    line_of,
    numeric_column,
    read_text_table,
    require_increasing,
    source_of,
)
from radsynth.core.config import ConfigError
from radsynth.core.provenance import file_sha256
from radsynth.train.identity import RunInputs
from radsynth.train.model import UNetSettings, build_unet
from radsynth.train.settings import RunSettings, run_settings_from_dict

CHECKPOINT_DIR = "checkpoints"
STATE_DIR = "state"
LOSS_LOG = "loss_log.csv"
INDEX_CSV = "index.csv"
LOSS_LOG_COLUMNS = ("step", "train_loss", "val_loss", "val_loss_ema", "lr", "wall_time_s")
INDEX_COLUMNS = ("step", "checkpoint", "path", "bytes", "train_loss", "val_loss", "val_loss_ema")
#: Index columns that may hold validation losses (blank in a full-data run).
VAL_COLUMNS = ("val_loss", "val_loss_ema")
_STATE_NAME = re.compile(r"^step(\d{6,})$")
_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def checkpoint_filename(step: int) -> str:
    return f"step{step:06d}.safetensors"


def _csv_text(columns: tuple[str, ...], rows: list[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _csv_cell(value: float | int | str | None) -> str:
    """CSV cell: blank for None, shortest round-trip repr for floats (bit-exact comparisons)."""
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def model_config_json(model: torch.nn.Module) -> str:
    """The network's `network_config` (its architecture and the arguments that rebuild it) as
    JSON."""
    return json.dumps(model.network_config, sort_keys=True)


def _save_safetensors(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> int:
    """Atomically write a safetensors file; returns its size in bytes."""
    with atomic_output(path) as tmp:
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), dict(metadata)
        )
    return path.stat().st_size


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file; unreadable files raise naming the
    file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file is missing")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc


def save_history_checkpoint(
    path: Path,
    online: torch.nn.Module,
    ema_model: torch.nn.Module,
    dtype: str,
    metadata: Mapping[str, str],
) -> int:
    """Weights-only checkpoint (online and EMA, `dtype`); returns bytes written."""
    tensors = {f"online.{k}": v.to(_DTYPES[dtype]) for k, v in online.state_dict().items()}
    tensors.update({f"ema.{k}": v.to(_DTYPES[dtype]) for k, v in ema_model.state_dict().items()})
    return _save_safetensors(path, tensors, {**metadata, "dtype": dtype})


def read_checkpoint_settings(path: Path) -> RunSettings:
    """The run settings a history checkpoint was trained under (stored in its metadata)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path}: not a readable checkpoint ({exc})") from exc
    if "settings" not in metadata:
        raise ValueError(
            f"{path}: no settings in the checkpoint metadata (not a radsynth history checkpoint)"
        )
    try:
        return run_settings_from_dict(json.loads(metadata["settings"]))
    except ConfigError as exc:
        raise ValueError(
            f"{path}: settings in the checkpoint metadata do not load:\n{exc}"
        ) from exc


def load_checkpoint_weights(
    path: Path, which: Literal["ema", "online"], settings: UNetSettings
) -> torch.nn.Module:
    """A float32 network (`build_unet`) in eval mode with the `which` weights of a history
    checkpoint made under `settings`."""
    if which not in ("ema", "online"):
        raise ValueError(f"which must be 'ema' or 'online', got {which!r}")
    tensors, metadata = _read_safetensors(Path(path))
    model = build_unet(settings)
    if "model_config" not in metadata:
        raise ValueError(f"{path}: no model_config in the checkpoint metadata")
    stored, expected = json.loads(metadata["model_config"]), json.loads(model_config_json(model))
    differing = sorted(
        k for k in stored.keys() | expected.keys() if stored.get(k) != expected.get(k)
    )
    if differing:
        raise ValueError(f"{path}: model config differs from the model settings in {differing}")
    prefix = f"{which}."
    weights = {
        k[len(prefix) :]: v.to(torch.float32) for k, v in tensors.items() if k.startswith(prefix)
    }
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: {which} weights do not fit the model ({exc})") from exc
    return model.eval()


def latest_state_dir(run_dir: Path) -> Path | None:
    """The complete state with the highest step; `.tmp-*` directories are unfinished writes."""
    root = run_dir / STATE_DIR
    found = (
        [p for p in root.iterdir() if _STATE_NAME.match(p.name) and p.is_dir()]
        if root.is_dir()
        else []
    )
    return max(found, key=lambda p: int(_STATE_NAME.match(p.name).group(1)), default=None)


def reached_step(run_dir: Path) -> int:
    """The step of the run's latest complete state; 0 when it has none yet."""
    folder = latest_state_dir(run_dir)
    return 0 if folder is None else int(_STATE_NAME.match(folder.name).group(1))


def _write_state_files(folder: Path, parts: Mapping[str, Any], info: Mapping[str, Any]) -> None:
    """Write the state's files, then state.json with their hashes (all fsynced before the
    rename)."""
    for name, part in parts.items():
        if name.endswith(".safetensors"):
            save_file(
                {k: v.detach().contiguous().cpu() for k, v in part.items()}, str(folder / name)
            )
        else:
            torch.save(part, folder / name)
    hashes = {name: file_sha256(folder / name) for name in parts}
    (folder / "state.json").write_text(
        json.dumps({**info, "files": hashes}, indent=1, sort_keys=True)
    )
    for name in [*parts, "state.json"]:
        publish_permissions(folder / name, 0o666)
        with open(folder / name, "rb") as handle:
            os.fsync(handle.fileno())
    publish_permissions(folder, 0o777)


def save_state(run_dir: Path, step: int, parts: Mapping[str, Any], info: Mapping[str, Any]) -> Path:
    """Write the full state for `step` as a new directory, then remove every older one."""
    root = run_dir / STATE_DIR
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    _write_state_files(tmp, parts, {**info, "step": step})
    final = root / f"step{step:06d}"
    os.rename(tmp, final)
    for other in root.iterdir():
        if other != final:
            shutil.rmtree(other, ignore_errors=True)
    return final


def read_state(folder: Path, expected_identity: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(info, parts) of a saved state, verifying the run identity and every file's hash.

    The identity (radsynth.train.identity) leaves out training.num_steps, so a run continues
    when asked to train longer, but never on other data or under other result settings.
    """
    info_path = folder / "state.json"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{info_path}: missing or unreadable training state ({exc})") from exc
    if info.get("identity") != expected_identity:
        raise ValueError(
            f"{info_path}: state was written for different inputs or settings (run identity "
            f"{info.get('identity')!r}, expected {expected_identity!r}); use a new run directory"
        )
    if not isinstance(info.get("files"), dict) or "step" not in info:
        raise ValueError(f"{info_path}: lacks the 'files' and 'step' entries of a training state")
    parts: dict[str, Any] = {}
    for name, digest in info["files"].items():
        path = folder / name
        if not path.is_file() or file_sha256(path) != digest:
            raise ValueError(f"{path}: state file is missing or corrupt (hash mismatch)")
        if name.endswith(".safetensors"):
            parts[name] = _read_safetensors(path)[0]
        else:
            parts[name] = torch.load(path, map_location="cpu", weights_only=True)
    return info, parts


# ----------------------------------------------------------------------------------------------
# Loss log: one row per optimizer step, appended while training

_LOSS_LOG_HEADER = ",".join(LOSS_LOG_COLUMNS) + "\n"


def start_loss_log(path: Path) -> None:
    """A new run's loss log: the header alone."""
    write_text_atomic(path, _LOSS_LOG_HEADER)


def loss_log_row(
    step: int, train_loss: float, val: float | None, val_ema: float | None, lr: float, wall: float
) -> str:
    """The loss-log line of one step, to append to the open log."""
    return (
        ",".join(_csv_cell(v) for v in (step, train_loss, val, val_ema, lr, round(wall, 3))) + "\n"
    )


def truncate_loss_log(path: Path, step: int) -> None:
    """Keep the header and the rows of steps 1..`step`; later rows will be recomputed.

    Reads the raw lines, not `read_loss_log`: a killed job may have left a partial last row
    after the restored step, which is dropped here rather than refused."""
    lines = path.read_text().splitlines(keepends=True) if path.exists() else [_LOSS_LOG_HEADER]
    if lines[0] != _LOSS_LOG_HEADER:
        raise ValueError(f"{path}: header is not {_LOSS_LOG_HEADER.strip()!r}")
    kept = lines[1 : step + 1]
    for number, line in enumerate(kept, start=1):
        if not line.endswith("\n") or line.split(",")[0] != str(number):
            raise ValueError(
                f"{path} line {number + 1}: expected the complete row of step {number}"
            )
    if len(kept) != step:
        raise ValueError(
            f"{path}: has {len(kept)} step rows but the restored state is at step {step}"
        )
    write_text_atomic(path, _LOSS_LOG_HEADER + "".join(kept))


def read_loss_log(path: Path) -> pd.DataFrame:
    """`loss_log.csv` of a run as numbers (val columns NaN between checkpoints).

    Steps must run 1, 2, 3, ... without gaps: the loop writes one row per optimizer step and the
    loss figure's moving average counts rows as steps.
    """
    path = Path(path)
    text = read_text_table(path, LOSS_LOG_COLUMNS)
    frame = pd.DataFrame(
        {
            column: numeric_column(
                text, path, column, integer=column == "step", optional=column in VAL_COLUMNS
            )
            for column in LOSS_LOG_COLUMNS
        }
    )
    gaps = np.flatnonzero(frame["step"].to_numpy() != np.arange(1, len(frame) + 1))
    if len(gaps):
        row = int(gaps[0])
        found = frame["step"].iloc[row]
        raise ValueError(
            f"{path} line {line_of(frame, row)}, column 'step': {found} where step {row + 1} "
            "was expected"
        )
    frame.attrs[SOURCE_ATTR] = str(path)
    return frame


# ----------------------------------------------------------------------------------------------
# Checkpoint index: one row per history checkpoint, rewritten at each


def _require_all_or_none(values: pd.Series, path: Path, column: str) -> None:
    """A validation column is filled at every checkpoint (split run) or at none (full run)."""
    blank = values.isna().to_numpy()
    if blank.any() and not blank.all():
        row = int(np.flatnonzero(blank)[0])
        raise ValueError(
            f"{path} line {line_of(values, row)}, column {column!r}: blank, but other "
            "checkpoints have a value"
        )


def _require_one_spacing(frame: pd.DataFrame, path: Path) -> None:
    """Checkpoint numbers from 1, at one constant step/checkpoint ratio (checkpoint_every)."""
    not_positive = np.flatnonzero(frame["checkpoint"].to_numpy() < 1)
    if len(not_positive):
        row = int(not_positive[0])
        found = frame["checkpoint"].iloc[row]
        raise ValueError(
            f"{path} line {line_of(frame, row)}, column 'checkpoint': {found} is below 1"
        )
    every = frame["step"] / frame["checkpoint"]
    inconsistent = np.flatnonzero(every.to_numpy() != every.iloc[0]) if len(frame) else []
    if len(inconsistent):
        row = int(inconsistent[0])
        raise ValueError(
            f"{path} line {line_of(frame, row)}, column 'checkpoint': checkpoint "
            f"{frame['checkpoint'].iloc[row]} at step {frame['step'].iloc[row]} breaks the spacing "
            f"of line {line_of(frame, 0)} "
            f"(step {frame['step'].iloc[0]} = checkpoint {frame['checkpoint'].iloc[0]})"
        )


def read_checkpoint_index(path: Path) -> pd.DataFrame:
    """`checkpoints/index.csv` of a run as typed columns, one row per checkpoint.

    Checked: integer step/checkpoint/bytes, a path on every row, finite losses, increasing
    steps, one constant step/checkpoint ratio (the run's checkpoint_every) and validation
    columns filled on all rows or none. The source path is kept in `frame.attrs["source"]`.
    """
    path = Path(path)
    text = read_text_table(path, INDEX_COLUMNS)
    frame = pd.DataFrame(
        {
            "step": numeric_column(text, path, "step", integer=True, optional=False),
            "checkpoint": numeric_column(text, path, "checkpoint", integer=True, optional=False),
            "path": text["path"].str.strip(),
            "bytes": numeric_column(text, path, "bytes", integer=True, optional=False),
            "train_loss": numeric_column(text, path, "train_loss", integer=False, optional=False),
            **{c: numeric_column(text, path, c, integer=False, optional=True) for c in VAL_COLUMNS},
        }
    )
    empty_path = np.flatnonzero(frame["path"].to_numpy() == "")
    if len(empty_path):
        raise ValueError(f"{path} line {line_of(frame, int(empty_path[0]))}, column 'path': blank")
    require_increasing(frame["step"], path, "step")
    _require_one_spacing(frame, path)
    for column in VAL_COLUMNS:
        _require_all_or_none(frame[column], path, column)
    frame.attrs[SOURCE_ATTR] = str(path)
    return frame


def checkpoint_every(index: pd.DataFrame) -> int:
    """Steps between checkpoints of a run (its training.checkpoint_every), from its first row."""
    if index.empty:
        raise ValueError(f"{source_of(index, 'checkpoint index')}: no checkpoints yet")
    return int(index["step"].iloc[0]) // int(index["checkpoint"].iloc[0])


def _index_rows_before(path: Path, step: int) -> list[dict[str, str]]:
    """The index rows of steps before `step` as the text they were written as (so rewriting the
    index keeps them byte for byte); none when the run has no index yet."""
    if not path.exists():
        return []
    text = read_text_table(path, INDEX_COLUMNS)
    steps = numeric_column(text, path, "step", integer=True, optional=False)
    return text.loc[steps < step, list(INDEX_COLUMNS)].to_dict("records")


def add_index_row(
    run_dir: Path,
    step: int,
    number: int,
    nbytes: int,
    train_loss: float,
    val: float | None,
    val_ema: float | None,
) -> None:
    """Record the history checkpoint of `step` in the run's index, replacing any rows from
    `step` on (a resumed run remakes them)."""
    path = run_dir / CHECKPOINT_DIR / INDEX_CSV
    row = (step, number, f"{CHECKPOINT_DIR}/{checkpoint_filename(step)}", nbytes, train_loss)
    cells = dict(zip(INDEX_COLUMNS, map(_csv_cell, (*row, val, val_ema)), strict=True))
    write_text_atomic(path, _csv_text(INDEX_COLUMNS, [*_index_rows_before(path, step), cells]))


def truncate_history(run_dir: Path, step: int) -> None:
    """Drop checkpoints (files and index rows) made after `step`: the resumed run remakes them."""
    folder = run_dir / CHECKPOINT_DIR
    kept = _index_rows_before(folder / INDEX_CSV, step + 1)
    write_text_atomic(folder / INDEX_CSV, _csv_text(INDEX_COLUMNS, kept))
    for path in folder.glob("step*.safetensors"):
        if int(path.stem[len("step") :]) > step:
            path.unlink()


# ----------------------------------------------------------------------------------------------
# Run markers: what one training job certifies to the rules that depend on it

_MARKER_KEYS = {
    "run_dir": (str,),
    "identity": (str,),
    "step": (int,),
    "checkpoint": (str, type(None)),
}


@dataclass(frozen=True)
class RunMarker:
    """Run `run_dir` (of `identity`) trained to `step`; `checkpoint` is its history checkpoint at
    that step, None when no checkpoint falls on it."""

    run_dir: Path
    identity: str
    step: int
    checkpoint: Path | None


def write_run_marker(
    path: Path,
    run_dir: Path,
    inputs: RunInputs,
    step: int,
    checkpoint_every: int,
    provenance: Mapping[str, str],
) -> None:
    """Record (atomically) that the run in `run_dir` reached `step`, with the files that show it."""
    checkpoint = (
        run_dir / CHECKPOINT_DIR / checkpoint_filename(step)
        if step % checkpoint_every == 0
        else None
    )
    if checkpoint is not None and not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: history checkpoint of step {step} is missing")
    record = {
        "run_dir": str(run_dir),
        "identity": inputs.identity(),
        "step": step,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "checkpoint_index": str(run_dir / CHECKPOINT_DIR / INDEX_CSV),
        "loss_log": str(run_dir / LOSS_LOG),
        "inputs": asdict(inputs),
        "provenance": dict(provenance),
    }
    write_json_atomic(path, record)


def read_run_marker(path: Path) -> RunMarker:
    """The marker a training job wrote; a missing, unreadable or incomplete one fails naming the
    key."""
    path = Path(path)
    record = read_json_object(path, "run marker")
    for key, kinds in _MARKER_KEYS.items():
        if key not in record:
            raise ValueError(f"{path}: run marker lacks the key {key!r}")
        if not isinstance(record[key], kinds) or isinstance(record[key], bool):
            raise ValueError(f"{path}: run marker key {key!r} holds {record[key]!r}")
    checkpoint = record["checkpoint"]
    return RunMarker(
        Path(record["run_dir"]),
        record["identity"],
        record["step"],
        None if checkpoint is None else Path(checkpoint),
    )


def marker_checkpoint(marker_json: Path, step: int) -> Path:
    """The history checkpoint at `step` of the run a marker names. Only steps up to the marker's
    are certified: a later checkpoint may still be remade by a resumed job."""
    marker = read_run_marker(marker_json)
    if step > marker.step:
        raise ValueError(
            f"{marker_json}: the run reached step {marker.step} only; no checkpoint of step {step}"
        )
    path = marker.run_dir / CHECKPOINT_DIR / checkpoint_filename(step)
    if not path.is_file():
        raise FileNotFoundError(
            f"{marker_json}: run {marker.run_dir} has no checkpoint of step {step} ({path})"
        )
    return path
