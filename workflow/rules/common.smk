import re
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

from radsynth.train.labels import checkpoint_label
from radsynth.sample.plan import shard_plan

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
TURING_STUDY = "results/turing/study"
TURING_FORM = "results/turing/rating_form.html"
SIMULATED_RATINGS = "results/turing/simulated_ratings"
TURING_STATS = {
    name: f"results/turing/statistics/{name}"
    for name in ("statistics.json", "per_rater_means.csv", "tests.csv", "results.md")
}
TURING_VIOLINS = "results/turing/figures/rating_violins.png"
TURING_EXAMPLE = "results/turing/figures/example_quartet.png"
SELECTED_LABELS = [
    checkpoint_label(number) for number in config["checkpoints"]["selected"]
]
#: Minutes a training job may run past its time budget to save the final state and exit.
TRAIN_SHUTDOWN_MINUTES = 45


def config_sections(*names):
    """The config sections a job reads, passed as params so that changing them reruns it."""
    return {name: config[name] for name in names}


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


def turing_sample_manifests(wildcards):
    return expand(
        SAMPLE_MANIFEST, sample_set=config["turing"]["sample_set"], ckpt=SELECTED_LABELS
    )


def expert_rating_files():
    """The experts' rater CSVs in turing.ratings_folder (sorted; none yet is normal)."""
    return sorted(
        str(path) for path in Path(config["turing"]["ratings_folder"]).glob("*.csv")
    )


def ratings_available():
    return config["turing"]["ratings"] == "simulated" or bool(expert_rating_files())


def rating_files(wildcards):
    """Every rater's CSV: editing or adding one reruns only the statistics and figures."""
    if config["turing"]["ratings"] == "simulated":
        return SIMULATED_RATINGS
    files = expert_rating_files()
    if not files:
        raise WorkflowError(
            f"turing.ratings is 'folder' but {config['turing']['ratings_folder']} holds no *.csv "
            "rater files; place the experts' tidy CSVs there (radsynth qualtrics converts a "
            "Qualtrics export)"
        )
    return files


def turing_outputs():
    """The study and form always; statistics and figures once there are ratings to analyse."""
    if not ratings_available():
        logger.info(
            f"Turing test: no rater files in {config['turing']['ratings_folder']} yet; building "
            "the study and the rating form only. Statistics and figures follow when ratings arrive."
        )
        return [TURING_FORM]
    return [TURING_FORM, *TURING_STATS.values(), TURING_VIOLINS, TURING_EXAMPLE]


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
        *turing_outputs(),
    ]
