"""The settings that make a training run's identity: which keys count, and that key order never
does.
(Identity of whole runs, through train_job, is tested in test_training.py.)"""

from __future__ import annotations

import copy
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from radsynth.train.identity import (
    OPERATIONAL_TRAINING_KEYS,
    RunInputs,
    manifest_digest,
    result_settings,
    run_folder,
)

CONFIG = {
    "sampling": {"sets": {}},
    "training": {
        "seed": 7,
        "num_steps": 12,
        "learning_rate": 5e-5,
        "state_every": 4,
        "val_batch_size": 3,
        "compile": True,
        "ema": {"update_every": 10, "decay": 0.995},
        "adam_betas": [0.9, 0.99],
    },
    "model": {"sample_size": 16, "base_channels": 8},
    "diffusion": {"timesteps": 1000, "sigmoid_start": -3},
}

#: CONFIG's result settings, written out by hand with keys in sorted order.
EXPECTED = {
    "diffusion": {"sigmoid_start": -3, "timesteps": 1000},
    "model": {"base_channels": 8, "sample_size": 16},
    "training": {
        "adam_betas": [0.9, 0.99],
        "ema": {"decay": 0.995, "update_every": 10},
        "learning_rate": 5e-5,
        "seed": 7,
    },
}


def reversed_keys(value: object) -> object:
    if isinstance(value, dict):
        return {key: reversed_keys(value[key]) for key in reversed(list(value))}
    return value


def test_result_settings_are_sorted_whatever_the_key_order() -> None:
    other_order = reversed_keys(CONFIG)
    assert list(other_order["training"]["ema"]) == ["decay", "update_every"]
    assert repr(result_settings(CONFIG)) == repr(EXPECTED) == repr(result_settings(other_order))


def test_result_settings_leave_out_num_steps_and_operational_keys() -> None:
    assert OPERATIONAL_TRAINING_KEYS == ("val_batch_size", "state_every", "compile")
    before = copy.deepcopy(CONFIG)
    settings = result_settings(CONFIG)
    assert set(CONFIG["training"]) - set(settings["training"]) == {
        "num_steps",
        "val_batch_size",
        "state_every",
        "compile",
    }
    assert "sampling" not in settings
    assert CONFIG == before  # the config itself is left alone


def test_result_settings_without_the_left_out_keys_are_the_same() -> None:
    """A config that never had num_steps or the operational keys gives the same settings."""
    bare = copy.deepcopy(CONFIG)
    for key in ("num_steps", *OPERATIONAL_TRAINING_KEYS):
        del bare["training"][key]
    assert result_settings(bare) == EXPECTED


def test_result_settings_name_the_missing_sections() -> None:
    with pytest.raises(
        KeyError, match="config lacks the section.s. diffusion, training a training run reads"
    ):
        result_settings({"model": CONFIG["model"]})


def test_run_folder_is_the_identitys_first_16_hex_digits_under_the_root() -> None:
    identity = "0123456789abcdef" + "f" * 48
    assert run_folder("results/train/full", identity) == Path("results/train/full/0123456789abcdef")


def test_identity_module_imports_nothing_heavy() -> None:
    """The Snakefile imports it: no torch, numpy or pandas."""
    code = (
        "import sys, radsynth.train.identity; "
        "print(sorted(m for m in ('torch', 'numpy', 'pandas') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_manifest_digest_is_the_hash_of_each_subsets_atlas_rows() -> None:
    """The JSON is written out by hand: sorted keys, no spaces, rows as plain integers."""
    split = {"val": [1, 4], "train": [0, 2, 3]}
    assert manifest_digest(split) == sha256('{"train":[0,2,3],"val":[1,4]}')
    assert manifest_digest(None) == sha256('{"subsets":"all images"}')
    moved = {"train": [0, 1, 3], "val": [2, 4]}  # one image changed subset
    swapped = {"train": [1, 4], "val": [0, 2, 3]}
    digests = {manifest_digest(m) for m in (split, moved, swapped, None)}
    assert len(digests) == 4


def test_run_identity_hashes_the_atlas_the_manifest_and_the_settings() -> None:
    """A split run and a full-data run on one atlas with one config are different runs."""
    split = RunInputs("a" * 64, manifest_digest({"train": [0, 2, 3], "val": [1, 4]}), "c" * 64)
    full = RunInputs("a" * 64, manifest_digest(None), "c" * 64)
    assert split.identity() == sha256(
        f'{{"atlas_digest":"{"a" * 64}","manifest_digest":"{split.manifest_digest}",'
        f'"result_settings_hash":"{"c" * 64}"}}'
    )
    assert split.identity() != full.identity()
    assert split.differing(
        {
            "atlas_digest": "a" * 64,
            "manifest_digest": full.manifest_digest,
            "result_settings_hash": "c" * 64,
        }
    ) == ["manifest_digest"]
    assert split.differing({"atlas_digest": "b" * 64}) == [
        "atlas_digest",
        "manifest_digest",
        "result_settings_hash",
    ]
