import re

from radsynth.checkpoints import checkpoint_label
from radsynth.sampling import shard_plan

ATLAS_H5 = "results/preprocess/atlas.h5"
REJECTS_CSV = "results/preprocess/rejects.csv"
QC_FIGURE = "results/preprocess/qc.png"
SPLIT_MANIFEST = "results/split/manifest.csv"
ARCHIVE_DIR = "resources/csxa/archives"
TRAIN_DONE = "results/train/{run}/done.json"
LOSS_CURVES = "results/train/{run}/loss_curves.png"
CHECKPOINT_SELECTION = "results/train/selection.json"
FACING_CLASSIFIER = "results/facing/classifier.safetensors"
SHARD_STORE = "results/samples/{sample_set}/{ckpt}/shard{shard}.zarr"
SAMPLE_MANIFEST = "results/samples/{sample_set}/{ckpt}/manifest.csv"
SAMPLE_GRID = "results/samples/{sample_set}/{ckpt}/grid.png"
SELECTED_LABELS = [
    checkpoint_label(number) for number in config["checkpoints"]["selected"]
]
#: Minutes a training job may run past its time budget to save the final state and exit.
TRAIN_SHUTDOWN_MINUTES = 45


def csxa_archives():
    """Archive key (png, json) -> its config entry; empty in demo mode."""
    return config["data"].get("csxa", {}).get("archives", {})


wildcard_constraints:
    archive="png|json",
    run="split|full",
    sample_set="|".join(config["sampling"]["sets"]),
    ckpt="|".join(SELECTED_LABELS),
    shard=r"\d+",
    filename="|".join(re.escape(spec["filename"]) for spec in csxa_archives().values())
    or "no-archive-configured",


def raw_atlas_dirs(wildcards):
    """The raw atlas as image and annotation folders, from the configured source."""
    if config["data"]["source"] == "demo":
        return {
            "images": "resources/demo_atlas/images",
            "annotations": "resources/demo_atlas/annotations",
        }
    return {
        "images": "resources/csxa/unpacked/png",
        "annotations": "resources/csxa/unpacked/json",
    }


def archive_spec_by_filename(wildcards):
    for spec in csxa_archives().values():
        if spec["filename"] == wildcards.filename:
            return spec
    raise ValueError(f"no data.csxa.archives entry has filename {wildcards.filename!r}")


def csxa_setting(key):
    """A data.csxa setting, looked up when a CSXA job runs (the section is absent in demo mode)."""
    return lambda wildcards: config["data"]["csxa"][key]


def archive_spec(wildcards):
    return csxa_archives()[wildcards.archive]


def archive_path(wildcards):
    return f"{ARCHIVE_DIR}/{archive_spec(wildcards)['filename']}"


def train_dir(run):
    """A training run's folder: checkpoints, state and logs survive reruns, so none is an output."""
    return f"results/train/{run}"


def train_manifest(wildcards):
    """The split run trains on the manifest's train rows; the full run on every image."""
    return SPLIT_MANIFEST if wildcards.run == "split" else []


def train_runtime_minutes(wildcards):
    return int(config["train_jobs"]["max_wall_time_h"] * 60) + TRAIN_SHUTDOWN_MINUTES


def checkpoint_file(wildcards):
    """The full run's history checkpoint behind a selected checkpoint label."""
    number = config["checkpoints"]["selected"][SELECTED_LABELS.index(wildcards.ckpt)]
    step = number * config["training"]["checkpoint_every"]
    return f"{train_dir('full')}/checkpoints/step{step:06d}.safetensors"


def shard_stores(wildcards):
    plan = config["sampling"]["sets"][wildcards.sample_set]
    shards = shard_plan(plan["n_images"], plan["images_per_shard"])
    return expand(
        SHARD_STORE,
        sample_set=wildcards.sample_set,
        ckpt=wildcards.ckpt,
        shard=range(len(shards)),
    )


def final_outputs():
    return [
        ATLAS_H5,
        REJECTS_CSV,
        QC_FIGURE,
        SPLIT_MANIFEST,
        *expand(LOSS_CURVES, run=["split", "full"]),
        CHECKPOINT_SELECTION,
        *expand(
            SAMPLE_GRID, sample_set=config["sampling"]["sets"], ckpt=SELECTED_LABELS
        ),
    ]
