"""radsynth.core.config: settings errors name every bad key by its dotted path, and the cross-key
checks catch each contradiction in a config, both in Python and when Snakemake builds the DAG."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import Field

from radsynth.core.config import ConfigError, ConfigModel, ListOf, check_config, load_settings

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


class Deep(ConfigModel):
    count: int = Field(ge=1)
    rate: float
    flags: ListOf[bool]


class Middle(ConfigModel):
    deep: Deep
    name: str


class Top(ConfigModel):
    middle: Middle
    pair: ListOf[float] = Field(min_length=2, max_length=2)


def good_values() -> dict:
    return {
        "middle": {"deep": {"count": 3, "rate": 1, "flags": [True, False]}, "name": "x"},
        "pair": [0.5, 1],
    }


def errors_of(values: dict, section: str = "") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(Top, values, section)
    return str(caught.value).splitlines()


# ----------------------------------------------------------------------------- the loader


def test_valid_values_become_frozen_settings_with_tuples() -> None:
    settings = load_settings(Top, good_values())
    assert settings.pair == (0.5, 1.0) and settings.middle.deep.flags == (True, False)
    assert settings.middle.deep.rate == 1.0 and isinstance(settings.middle.deep.rate, float)
    assert hash(settings) == hash(load_settings(Top, good_values()))
    with pytest.raises(ValueError, match="frozen"):
        settings.middle.deep.count = 4


def test_unknown_key_is_named_at_depth() -> None:
    values = good_values()
    values["middle"]["deep"]["colour"] = "red"
    assert errors_of(values) == ["middle.deep.colour: unknown key"]


def test_missing_key_is_named_at_depth_under_the_section() -> None:
    values = good_values()
    del values["middle"]["deep"]["rate"]
    assert errors_of(values, "outer") == ["outer.middle.deep.rate: missing key"]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("count", 8.5, "middle.deep.count: expected an integer, got 8.5"),
        ("count", 8.0, "middle.deep.count: expected an integer, got 8.0"),
        ("count", "8", "middle.deep.count: expected an integer, got '8'"),
        ("count", True, "middle.deep.count: expected an integer, got True"),
        ("count", 0, "middle.deep.count: must be at least 1, got 0"),
        ("rate", "fast", "middle.deep.rate: expected a number, got 'fast'"),
        ("flags", "yes", "middle.deep.flags: expected a list, got 'yes'"),
        ("flags", [True, 1], "middle.deep.flags[1]: expected true or false, got 1"),
    ],
)
def test_mistyped_value_is_named_at_depth(key: str, value: object, message: str) -> None:
    values = good_values()
    values["middle"]["deep"][key] = value
    assert errors_of(values) == [message]


def test_every_bad_key_is_listed_in_one_error() -> None:
    values = {"middle": {"deep": "none", "name": 3, "extra": 1}, "pair": [1.0, 2.0, 3.0]}
    assert errors_of(values, "top") == [
        "top.middle.deep: expected a mapping, got 'none'",
        "top.middle.name: expected a string, got 3",
        "top.middle.extra: unknown key",
        "top.pair: expected at most 2 values, got [1.0, 2.0, 3.0]",
    ]


def test_a_section_that_is_not_a_mapping_is_named() -> None:
    assert errors_of([1, 2]) == ["config: expected a mapping, got [1, 2]"]


# ----------------------------------------------------------------------------- cross-key checks


def preset(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


@pytest.mark.parametrize("name", ["config.yaml", "csxa.yaml"])
def test_presets_pass(name: str) -> None:
    check_config(preset(name))


def schedule_base() -> dict:
    """The demo config on a fixed schedule (200 steps, a checkpoint every 20, checkpoints 4, 5 and 10,
    FID every 100 steps), so the expected messages do not follow the demo's tuning."""
    config = preset("config.yaml")
    config["training"].update(num_steps=200, checkpoint_every=20)
    config["checkpoints"]["selected"] = [4, 5, 10]
    config["evaluate"]["every_steps"] = 100
    return config


def set_key(config: dict, dotted: str, value: object) -> dict:
    """A copy of `config` with one key (a.b.c) set."""
    changed = copy.deepcopy(config)
    *parents, last = dotted.split(".")
    section = changed
    for part in parents:
        section = section[part]
    section[last] = value
    return changed


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("model.sample_size", 64, "model.sample_size 64 differs from preprocess.size 32"),
        ("preprocess.size", 64, "model.sample_size 32 differs from preprocess.size 64"),
        (
            "checkpoints.selected",
            [4, 11, 10],
            "checkpoints.selected 11 x training.checkpoint_every 20 = step 220 is beyond training.num_steps 200",
        ),
        (
            "training.num_steps",
            150,
            "checkpoints.selected 10 x training.checkpoint_every 20 = step 200 is beyond training.num_steps 150",
        ),
        ("checkpoints.convergence.smoothing", 4, "checkpoints.convergence.smoothing 4 is even"),
        (
            "turing.sample_set",
            "huge",
            "turing.sample_set 'huge' is not a key of sampling.sets (initial, large)",
        ),
        ("data.source", "csxa", "data.source is 'csxa' but there is no data.csxa section"),
        (
            "turing.simulation.mean_rating_checkpoints",
            [3.2, 3.3],
            "turing.simulation.mean_rating_checkpoints has 2 values but checkpoints.selected has 3",
        ),
        ("turing.example_quartet", 7, "turing.example_quartet 7 is beyond turing.n_quartets 6"),
        ("turing.n_quartets", 0, "turing.example_quartet 1 is beyond turing.n_quartets 0"),
        (
            "evaluate.every_steps",
            30,
            "evaluate.every_steps 30 is not a multiple of training.checkpoint_every 20",
        ),
        ("evaluate.every_steps", 220, "evaluate.every_steps 220 is beyond training.num_steps 200"),
        (
            "sampling.sets.fid",
            {"n_images": 4, "images_per_shard": 4},
            "sampling.sets.fid: the name is taken by the FID set (evaluate.samples)",
        ),
        (
            "evaluate.extractor",
            {"name": "fid-inception", "antialias": True},
            "evaluate.extractor.name is fid-inception but evaluate.extractor.weights is missing",
        ),
        (
            "audit.sample_sets",
            ["large", "huge"],
            "audit.sample_sets: 'huge' is not a key of sampling.sets (initial, large)",
        ),
        (
            "audit.memorization",
            {"top": 100, "encoder": "vit"},
            "audit.memorization.encoder is vit but audit.memorization.weights is missing",
        ),
    ],
)
def test_each_cross_key_violation_is_named(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_config(set_key(schedule_base(), key, value))
    lines = str(caught.value).splitlines()
    assert len(lines) == 2 and lines[1].startswith(message), lines


def test_the_demo_source_needs_its_section() -> None:
    config = preset("config.yaml")
    del config["data"]["demo"]
    with pytest.raises(
        ConfigError, match="data.source is 'demo' but there is no data.demo section"
    ):
        check_config(config)


def test_every_violation_is_listed_at_once() -> None:
    config = set_key(
        set_key(preset("csxa.yaml"), "turing.example_quartet", 51), "model.sample_size", 128
    )
    with pytest.raises(ConfigError) as caught:
        check_config(config)
    assert str(caught.value).splitlines() == [
        "config keys contradict each other:",
        "model.sample_size 128 differs from preprocess.size 256: the model trains on the atlas images",
        "turing.example_quartet 51 is beyond turing.n_quartets 50",
    ]


def test_rating_means_are_free_when_ratings_come_from_a_folder() -> None:
    config = set_key(preset("config.yaml"), "turing.simulation.mean_rating_checkpoints", [3.2])
    check_config(set_key(config, "turing.ratings", "folder"))


@pytest.mark.parametrize(
    ("selected", "means"), [("auto", [3.2]), (["auto"], [3.2]), ([4, "auto"], [3.2, 3.3])]
)
def test_automatic_checkpoint_selection_is_skipped(selected: object, means: list[float]) -> None:
    config = set_key(schedule_base(), "training.num_steps", 100)  # 4 x 20 fits, 5 and 10 would not
    config = set_key(config, "turing.simulation.mean_rating_checkpoints", means)
    check_config(set_key(config, "checkpoints.selected", selected))


def test_the_dag_is_not_built_from_a_contradicting_config(tmp_path: Path) -> None:
    configfile = tmp_path / "config.yaml"
    configfile.write_text(
        yaml.safe_dump(set_key(preset("config.yaml"), "turing.example_quartet", 7))
    )
    result = subprocess.run(
        [str(SNAKEMAKE), "-n", "--cores", "1", "--configfile", str(configfile)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "turing.example_quartet 7 is beyond turing.n_quartets 6" in output
