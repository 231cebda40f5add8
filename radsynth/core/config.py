"""How config values become typed settings, and the checks across keys that one section's model
cannot express. The settings models themselves are in radsynth.core.settings.

Every settings class is a `ConfigModel`: frozen, unknown keys rejected, and no silent type
coercion (8.5 or "8" is not an integer; an integer is a valid number). `load_settings` is the
one way a config section becomes settings; its errors name every offending key by its dotted
config path. `check_config` runs when the DAG is built, so a contradiction fails before any job.

This module imports nothing heavy (no torch, no numpy): the Snakefile imports it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

T = TypeVar("T")
M = TypeVar("M", bound="ConfigModel")


class ConfigError(ValueError):
    """A config that cannot run; the message names each key at fault by its dotted path."""


class ConfigModel(BaseModel):
    """Base of every settings class: immutable (hashable, safe to share), typos fail loudly."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


#: A YAML list, held as a tuple so settings stay immutable; its items are still checked strictly.
ListOf = Annotated[tuple[T, ...], Field(strict=False)]
#: A count or a size: an integer of at least 1.
Count = Annotated[int, Field(ge=1)]

#: What each pydantic error type means for a config key, formatted with the error's input and
#: context.
_PROBLEMS = {
    "missing": "missing key",
    "extra_forbidden": "unknown key",
    "int_type": "expected an integer, got {input!r}",
    "float_type": "expected a number, got {input!r}",
    "bool_type": "expected true or false, got {input!r}",
    "string_type": "expected a string, got {input!r}",
    "literal_error": "expected {expected}, got {input!r}",
    "tuple_type": "expected a list, got {input!r}",
    "model_type": "expected a mapping, got {input!r}",
    "too_short": "expected at least {min_length} values, got {input!r}",
    "too_long": "expected at most {max_length} values, got {input!r}",
    "greater_than": "must be greater than {gt}, got {input!r}",
    "greater_than_equal": "must be at least {ge}, got {input!r}",
    "less_than": "must be less than {lt}, got {input!r}",
    "less_than_equal": "must be at most {le}, got {input!r}",
    "value_error": "{error}",
}


def config_path(section: str, loc: tuple[int | str, ...]) -> str:
    """Dotted config path of a pydantic error location: training.ema.beta,
    model.attention_levels[2]."""
    path = section
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else part
    return path or "config"


def describe(error: ErrorDetails, section: str) -> str:
    """One line per pydantic error: the key's path, then what is wrong with its value."""
    template = _PROBLEMS.get(error["type"], "{msg}, got {input!r}")
    problem = template.format(input=error["input"], msg=error["msg"], **error.get("ctx", {}))
    return f"{config_path(section, error['loc'])}: {problem}"


def load_settings(model: type[M], values: Any, section: str = "") -> M:
    """Settings of class `model` from the config mapping found at `section` (dotted path, "" for
    the whole config); lists become tuples. Raises one ConfigError naming every bad key."""
    try:
        return model.model_validate(values)
    except ValidationError as error:
        errors = [e for e in error.errors() if not _counts_a_bad_item(e, error.errors())]
        raise ConfigError("\n".join(describe(e, section) for e in errors)) from None


def _counts_a_bad_item(error: ErrorDetails, errors: list[ErrorDetails]) -> bool:
    """A list's length error that only follows from an item's own error (pydantic leaves the
    bad item out before it counts): the item's error says what is wrong."""
    loc = error["loc"]
    return error["type"] in ("too_short", "too_long") and any(
        other["loc"][: len(loc)] == loc and len(other["loc"]) > len(loc) for other in errors
    )


# ----------------------------------------------------------------------------- cross-key checks


#: The sampling set that FID draws from; no configured set may take its name.
FID_SAMPLE_SET = "fid"
#: The sampling set the anatomy stage's utility students train on (anatomy.utility.samples, from
#: the split run's last checkpoint); no configured set may take its name.
UTILITY_SAMPLE_SET = "utility"


def _selected_numbers(config: Mapping[str, Any]) -> list[int]:
    """The numbered entries of checkpoints.selected; a word (a later `auto`) has no number to
    check."""
    selected = config["checkpoints"]["selected"]
    entries = selected if isinstance(selected, list) else []
    return [n for n in entries if isinstance(n, int) and not isinstance(n, bool)]


def _image_size(config: Mapping[str, Any]) -> Iterator[str]:
    model, atlas = config["model"]["sample_size"], config["preprocess"]["size"]
    if model != atlas:
        yield (
            f"model.sample_size {model} differs from preprocess.size {atlas}: the model trains on "
            "the atlas images"
        )


def _checkpoints_reached(config: Mapping[str, Any]) -> Iterator[str]:
    every, steps = config["training"]["checkpoint_every"], config["training"]["num_steps"]
    for number in _selected_numbers(config):
        if number * every > steps:
            yield (
                f"checkpoints.selected {number} x training.checkpoint_every {every} = step "
                f"{number * every} is beyond training.num_steps {steps}"
            )


def _odd_smoothing(config: Mapping[str, Any]) -> Iterator[str]:
    smoothing = config["checkpoints"]["convergence"]["smoothing"]
    if smoothing % 2 == 0:
        yield (
            f"checkpoints.convergence.smoothing {smoothing} is even: a centred moving average "
            "needs an odd window"
        )


def _turing_sample_set(config: Mapping[str, Any]) -> Iterator[str]:
    name, sets = config["turing"]["sample_set"], config["sampling"]["sets"]
    if name not in sets:
        yield f"turing.sample_set {name!r} is not a key of sampling.sets ({', '.join(sets)})"


def _fid_schedule(config: Mapping[str, Any]) -> Iterator[str]:
    every, per_checkpoint = (
        config["evaluate"]["every_steps"],
        config["training"]["checkpoint_every"],
    )
    if every % per_checkpoint:
        yield (
            f"evaluate.every_steps {every} is not a multiple of training.checkpoint_every "
            f"{per_checkpoint}: FID is computed on history checkpoints"
        )
    if every > config["training"]["num_steps"]:
        steps = config["training"]["num_steps"]
        yield f"evaluate.every_steps {every} is beyond training.num_steps {steps}"


def _fid_sample_set(config: Mapping[str, Any]) -> Iterator[str]:
    if FID_SAMPLE_SET in config["sampling"]["sets"]:
        yield f"sampling.sets.{FID_SAMPLE_SET}: the name is taken by the FID set (evaluate.samples)"
    if UTILITY_SAMPLE_SET in config["sampling"]["sets"]:
        yield (
            f"sampling.sets.{UTILITY_SAMPLE_SET}: the name is taken by the anatomy stage's utility "
            "set (anatomy.utility.samples)"
        )


def _fid_weights(config: Mapping[str, Any]) -> Iterator[str]:
    extractor = config["evaluate"]["extractor"]
    if extractor["name"] == "fid-inception" and extractor.get("weights") is None:
        yield "evaluate.extractor.name is fid-inception but evaluate.extractor.weights is missing"


def _audited_sets(config: Mapping[str, Any]) -> Iterator[str]:
    sets = config["sampling"]["sets"]
    for name in config["audit"]["sample_sets"]:
        if name not in sets:
            yield f"audit.sample_sets: {name!r} is not a key of sampling.sets ({', '.join(sets)})"


def _audit_weights(config: Mapping[str, Any]) -> Iterator[str]:
    memorization = config["audit"]["memorization"]
    if memorization["encoder"] == "vit" and memorization.get("weights") is None:
        yield "audit.memorization.encoder is vit but audit.memorization.weights is missing"


def _source_section(config: Mapping[str, Any]) -> Iterator[str]:
    source = config["data"]["source"]
    if config["data"].get(source) is None:
        yield f"data.source is {source!r} but there is no data.{source} section"


def _simulated_means(config: Mapping[str, Any]) -> Iterator[str]:
    turing, selected = config["turing"], config["checkpoints"]["selected"]
    if turing["ratings"] != "simulated" or not isinstance(selected, list):
        return
    means = turing["simulation"]["mean_rating_checkpoints"]
    if len(means) != len(selected):
        yield (
            f"turing.simulation.mean_rating_checkpoints has {len(means)} values but "
            f"checkpoints.selected has {len(selected)} (turing.ratings is simulated: one mean per "
            "selected checkpoint)"
        )


def _example_quartet(config: Mapping[str, Any]) -> Iterator[str]:
    example, n_quartets = config["turing"]["example_quartet"], config["turing"]["n_quartets"]
    if example > n_quartets:
        yield f"turing.example_quartet {example} is beyond turing.n_quartets {n_quartets}"


def _quartets_drawable(config: Mapping[str, Any]) -> Iterator[str]:
    """Each quartet takes one image of the study's sample set per selected checkpoint (and one
    real image): a set smaller than the quartet count fails only after training and sampling."""
    turing, sets = config["turing"], config["sampling"]["sets"]
    n_quartets, name = turing["n_quartets"], turing["sample_set"]
    if name in sets and n_quartets > sets[name]["n_images"]:
        yield (
            f"turing.n_quartets {n_quartets} is more than sampling.sets.{name}.n_images "
            f"{sets[name]['n_images']} (turing.sample_set {name!r}): each quartet takes one image "
            "of that set per selected checkpoint"
        )
    demo = config["data"].get("demo") if config["data"]["source"] == "demo" else None
    if demo and n_quartets > demo["n_images"]:
        yield (
            f"turing.n_quartets {n_quartets} is more than data.demo.n_images {demo['n_images']}: "
            "each quartet takes one real atlas image"
        )


CROSS_KEY_CHECKS = (
    _image_size,
    _checkpoints_reached,
    _odd_smoothing,
    _turing_sample_set,
    _fid_schedule,
    _fid_sample_set,
    _fid_weights,
    _audited_sets,
    _audit_weights,
    _source_section,
    _simulated_means,
    _example_quartet,
    _quartets_drawable,
)


def check_config(config: Mapping[str, Any]) -> None:
    """Check a config the settings models accept across keys; one ConfigError lists every
    violation."""
    problems = [problem for check in CROSS_KEY_CHECKS for problem in check(config)]
    if problems:
        raise ConfigError("config keys contradict each other:\n" + "\n".join(problems))


def canonical(value: Any) -> Any:
    """`value` with every mapping's keys sorted, recursively, and lists as lists.

    Snakemake compares a rule's params by their repr, so a config written back with its keys in
    another order (as many YAML tools do) would otherwise rerun every job although no value changed.
    """
    if isinstance(value, Mapping):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [canonical(item) for item in value]
    return value


def pick(section: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    """The keys of a config section that change a job's output, canonical: a rule's params."""
    return canonical({key: section[key] for key in keys})
