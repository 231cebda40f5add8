"""The settings that make a training run's identity: which keys count, and that key order never does.
(Identity of whole runs, through train_job, is tested in test_training.py.)"""

from __future__ import annotations

import copy
import subprocess
import sys

from radsynth.train.identity import OPERATIONAL_TRAINING_KEYS, result_settings

CONFIG = {
    "sampling": {"sets": {}},
    "training": {
        "seed": 7,
        "num_steps": 12,
        "learning_rate": 5e-5,
        "state_every": 4,
        "val_batch_size": 3,
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
    assert OPERATIONAL_TRAINING_KEYS == ("val_batch_size", "state_every")
    before = copy.deepcopy(CONFIG)
    settings = result_settings(CONFIG)
    assert set(CONFIG["training"]) - set(settings["training"]) == {
        "num_steps",
        "val_batch_size",
        "state_every",
    }
    assert "sampling" not in settings
    assert CONFIG == before  # the config itself is left alone


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
