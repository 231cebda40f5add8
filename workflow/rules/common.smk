import re
from pathlib import Path

from snakemake.exceptions import WorkflowError

# Snakemake's report() under another name: a line starting with `report` is read as the directive.
from snakemake.io import report as report_item
from snakemake.logging import logger

from radsynth.core.config import FID_SAMPLE_SET, canonical, pick
from radsynth.evaluate.weights import weights_sections
from radsynth.sample.plan import shard_plan
from radsynth.train.identity import result_settings
from radsynth.train.labels import checkpoint_label, read_selected_labels

ATLAS_H5 = "results/preprocess/atlas.h5"
REJECTS_CSV = "results/preprocess/rejects.csv"
QC_FIGURE = "results/preprocess/qc.png"
SPLIT_MANIFEST = "results/split/manifest.csv"
ARCHIVE_DIR = "resources/csxa/archives"
#: A training run's folder: one subfolder per run identity (inputs + settings), never an output.
TRAIN_RUNS = "results/train/{run}"
#: Written when a run has reached a step: which run folder holds it, and its checkpoint.
TRAIN_REACHED = "results/train/{run}/reached/step{step}.json"
LOSS_CURVES = "results/train/{run}/loss_curves.png"
CHECKPOINT_SELECTION = "results/train/selection.json"
FACING_CLASSIFIER = "results/facing/classifier.safetensors"
SHARD_STORE = "results/samples/{sample_set}/{ckpt}/shard{shard}.zarr"
SAMPLE_MANIFEST = "results/samples/{sample_set}/{ckpt}/manifest.csv"
SAMPLE_GRID = "results/samples/{sample_set}/{ckpt}/grid.png"
#: The study folder is made by its job, not declared: Snakemake deletes declared outputs before
#: a rerun, and a study that experts have rated must never be deleted (see build_quartets).
#: Network weights, fetched on the login node (or placed by hand): FID Inception, the audit ViT.
WEIGHTS = "resources/weights/{weights_file}"
REAL_FEATURES_RECORD = "results/evaluate/real_features.json"
#: Where the real-image features are cached, keyed by atlas and extractor digests (not an output:
#: the record above is, and its job is the one writer).
REAL_FEATURES_CACHE = "results/evaluate/cache"
FID_ROW = "results/evaluate/fid/{ckpt}.json"
FID_TABLE = "results/evaluate/fid.csv"
FID_FIGURE = "results/evaluate/fid_vs_step.png"
SCREEN_MODEL = "results/audit/plausibility_model.npz"
#: Per audited set: sets/<sample set>/<checkpoint>/screening_manifest.csv and contact_sheets/.
SCREENING_SETS = "results/audit/screening/sets"
MERGED_SCREENING = "results/audit/screening/merged.csv"
SCREENING_CONFLICTS = "results/audit/screening/conflicts.csv"
SCREENING_COUNTS = "results/audit/screening/counts.csv"
SCREENING_COUNTS_FIGURE = "results/audit/screening/counts.png"
MEMORIZATION = "results/audit/memorization"
#: Offline review pages: review/screening/<sample set>/<checkpoint>/review.html, review/pairs.html.
SCREENING_REVIEW = "results/audit/review/screening"
PAIRS_REVIEW = "results/audit/review/pairs.html"
PAIR_VERDICTS = "results/audit/review/pair_verdicts.csv"
PAIR_DISAGREEMENTS = "results/audit/review/pair_disagreements.csv"
#: The atlas' embeddings, keyed by images and encoder (not an output: a directory output is
#: emptied before its job reruns, and the cache must outlive a rerun).
MEMORIZATION_CACHE = "results/audit/cache"
RELEASE_PACKAGE = "results/release/package"
TURING_STUDY = "results/turing/study"
TURING_STUDY_RECORD = "results/turing/built_study.json"
TURING_FORM = "results/turing/rating_form.html"
SIMULATED_RATINGS = "results/turing/simulated_ratings"
TURING_STATS = {
    name: f"results/turing/statistics/{name}"
    for name in ("statistics.json", "per_rater_means.csv", "tests.csv", "results.md")
}
TURING_VIOLINS = "results/turing/figures/rating_violins.png"
TURING_EXAMPLE = "results/turing/figures/example_quartet.png"
AUTO_SELECTION = config["checkpoints"]["selected"] == "auto"
#: Minutes a training job may run past its time budget to save the final state and exit.
TRAIN_SHUTDOWN_MINUTES = 45


def csxa_archives():
    """Archive key (png, json) -> its config entry; empty in demo mode."""
    return config["data"].get("csxa", {}).get("archives", {})


def configured_weights():
    """Weights file name -> its config entry, for every network that needs a download (see
    radsynth.evaluate.weights.weights_sections)."""
    entries = {
        "evaluate.extractor": config["evaluate"]["extractor"],
        "audit.memorization": config["audit"]["memorization"],
    }
    return {
        filename: entries[sections[0]]["weights"]
        for filename, sections in weights_sections(config).items()
    }


wildcard_constraints:
    archive="png|json",
    run="split|full",
    sample_set="|".join([*config["sampling"]["sets"], FID_SAMPLE_SET]),
    ckpt=r"ckpt[0-9][0-9][0-9]+",
    shard=r"\d+",
    step=r"\d+",
    filename="|".join(re.escape(spec["filename"]) for spec in csxa_archives().values())
    or "no-archive-configured",
    weights_file="|".join(re.escape(name) for name in configured_weights())
    or "no-weights-configured",


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
            return canonical(spec)
    raise ValueError(f"no data.csxa.archives entry has filename {wildcards.filename!r}")


def archive_spec(wildcards):
    return canonical(csxa_archives()[wildcards.archive])


def archive_path(wildcards):
    return f"{ARCHIVE_DIR}/{archive_spec(wildcards)['filename']}"


def selected_labels(wildcards=None):
    """The checkpoints to sample: the configured list, or the run's own choice with `auto`
    (then known only once select_checkpoints, a Snakemake checkpoint, has run)."""
    if AUTO_SELECTION:
        return read_selected_labels(checkpoints.select_checkpoints.get().output[0])
    return [checkpoint_label(number) for number in config["checkpoints"]["selected"]]


def fid_checkpoints():
    """Numbers of the full run's checkpoints evaluated by FID: every evaluate.every_steps steps."""
    every_steps = config["evaluate"]["every_steps"]
    per_checkpoint = config["training"]["checkpoint_every"]
    last = config["training"]["num_steps"] // every_steps
    return [k * every_steps // per_checkpoint for k in range(1, last + 1)]


def run_steps(run):
    """Steps at which a run reports to the DAG: every configured and every FID-evaluated checkpoint
    of the full run (so their sampling starts while training goes on) and the last step.
    """
    training = config["training"]
    steps = {training["num_steps"]}
    if run == "full":
        every = training["checkpoint_every"]
        steps |= {number * every for number in fid_checkpoints()}
        if not AUTO_SELECTION:
            steps |= {number * every for number in config["checkpoints"]["selected"]}
    return sorted(steps)


def reached(run, step):
    return TRAIN_REACHED.format(run=run, step=step)


def train_done(run):
    """The marker of a run that has trained all its steps."""
    return reached(run, config["training"]["num_steps"])


def previous_segment(wildcards):
    """Segments of one run follow each other: never two jobs in one run folder."""
    earlier = [step for step in run_steps(wildcards.run) if step < int(wildcards.step)]
    return reached(wildcards.run, earlier[-1]) if earlier else []


def train_manifest(wildcards):
    """The split run trains on the manifest's train rows; the full run on every image."""
    return SPLIT_MANIFEST if wildcards.run == "split" else []


def train_runtime_minutes(wildcards):
    return int(config["train_jobs"]["max_wall_time_h"] * 60) + TRAIN_SHUTDOWN_MINUTES


def checkpoint_number(wildcards):
    return int(wildcards.ckpt[len("ckpt") :])


def checkpoint_marker(wildcards):
    """The full run's marker of the step a checkpoint label stands for (for a selected checkpoint
    with `auto`: its last step, where the selection needs the finished run anyway)."""
    if AUTO_SELECTION and wildcards.sample_set != FID_SAMPLE_SET:
        return train_done("full")
    return reached(
        "full", checkpoint_number(wildcards) * config["training"]["checkpoint_every"]
    )


def sampling_settings(wildcards):
    """The sampling keys that change the images (gather and figure settings are not among them);
    the FID set has its own sampler and step count."""
    settings = pick(
        config["sampling"],
        "sampler",
        "steps",
        "clip_sample",
        "quantization",
        "weights",
        "base_seed",
        "batch_size",
    )
    if wildcards.sample_set == FID_SAMPLE_SET:
        settings |= pick(config["evaluate"]["samples"], "sampler", "steps")
    return settings


def set_plan(sample_set):
    """How many images a set has and how they are sharded."""
    if sample_set == FID_SAMPLE_SET:
        return pick(config["evaluate"]["samples"], "n_images", "images_per_shard")
    return canonical(config["sampling"]["sets"][sample_set])


def sample_set_plan(wildcards):
    return set_plan(wildcards.sample_set)


def set_shard_stores(sample_set, ckpt):
    plan = set_plan(sample_set)
    shards = shard_plan(plan["n_images"], plan["images_per_shard"])
    return expand(
        SHARD_STORE, sample_set=sample_set, ckpt=ckpt, shard=range(len(shards))
    )


def shard_stores(wildcards):
    return set_shard_stores(wildcards.sample_set, wildcards.ckpt)


def fid_shard_stores(wildcards):
    return set_shard_stores(FID_SAMPLE_SET, wildcards.ckpt)


def weights_spec(wildcards):
    return pick(
        configured_weights()[wildcards.weights_file], "url", "checksum", "landing_page"
    )


def fid_weights_file():
    extractor = config["evaluate"]["extractor"]
    if extractor["name"] != "fid-inception":
        return []
    return WEIGHTS.format(weights_file=extractor["weights"]["filename"])


def audit_weights_file():
    memorization = config["audit"]["memorization"]
    if memorization["encoder"] != "vit":
        return []
    return WEIGHTS.format(weights_file=memorization["weights"]["filename"])


def extractor_settings():
    """The extractor keys that change features: its name, antialiasing, and which weights file."""
    extractor = config["evaluate"]["extractor"]
    settings = pick(extractor, "name", "antialias")
    if extractor["name"] == "fid-inception":
        settings["weights"] = pick(extractor["weights"], "filename", "checksum")
    return settings


def fid_rows(wildcards):
    return expand(FID_ROW, ckpt=[checkpoint_label(n) for n in fid_checkpoints()])


def audited_sets():
    """(sample set, checkpoint label) of every screened and audited set."""
    return [
        (sample_set, ckpt)
        for sample_set in config["audit"]["sample_sets"]
        for ckpt in selected_labels()
    ]


def audited_sample_manifests(wildcards):
    return [
        SAMPLE_MANIFEST.format(sample_set=sample_set, ckpt=ckpt)
        for sample_set, ckpt in audited_sets()
    ]


def audited_shard_stores(wildcards):
    return [
        store
        for sample_set, ckpt in audited_sets()
        for store in set_shard_stores(sample_set, ckpt)
    ]


def review_files(wildcards):
    """Reviewed copies of screening manifests in audit.reviews_folder (sorted; none is normal):
    one arriving reruns the merge and what depends on it, nothing upstream."""
    return sorted(
        str(path) for path in Path(config["audit"]["reviews_folder"]).glob("*.csv")
    )


def pair_verdict_files(wildcards):
    """Reviewers' exported verdicts on the memorization pairs in audit.pair_verdicts_folder."""
    return sorted(
        str(path)
        for path in Path(config["audit"]["pair_verdicts_folder"]).glob("*.csv")
    )


def memorization_encoder():
    """The encoder keys that change embeddings: its name, and which weights file."""
    memorization = config["audit"]["memorization"]
    settings = pick(memorization, "encoder")
    if memorization["encoder"] == "vit":
        settings["weights"] = pick(memorization["weights"], "filename", "checksum")
    return settings


#: Config keys the dataset card shows: how the released images were made, screened and audited.
CARD_KEYS = (
    "data.source",
    "preprocess.size",
    "model.architecture",
    "diffusion.timesteps",
    "training.num_steps",
    "training.batch_size",
    "training.gradient_accumulation_steps",
    "training.learning_rate",
    "training.checkpoint_every",
    "checkpoints.selected",
    "sampling.sampler",
    "sampling.steps",
    "sampling.weights",
    "sampling.base_seed",
    "audit.screen.threshold",
    "audit.memorization.encoder",
)


def card_values():
    """The CARD_KEYS' values, by dotted key."""
    values = {}
    for key in CARD_KEYS:
        section = config
        for part in key.split("."):
            section = section[part]
        values[key] = canonical(section)
    return values


def turing_sample_manifests(wildcards):
    return expand(
        SAMPLE_MANIFEST,
        sample_set=config["turing"]["sample_set"],
        ckpt=selected_labels(),
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


def turing_stats_outputs():
    """TURING_STATS, the per-rater means and the tests table shown in the report."""
    shown = {"tests.csv", "per_rater_means.csv"}
    return {
        name: (
            report_item(
                path, caption="../report/turing_tests.rst", category="Turing test"
            )
            if name in shown
            else path
        )
        for name, path in TURING_STATS.items()
    }


def turing_outputs():
    """The study and form always; statistics and figures once there are ratings to analyse."""
    if not ratings_available():
        logger.info(
            f"Turing test: no rater files in {config['turing']['ratings_folder']} yet; building "
            "the study and the rating form only. Statistics and figures follow when ratings arrive."
        )
        return [TURING_FORM]
    return [TURING_FORM, *TURING_STATS.values(), TURING_VIOLINS, TURING_EXAMPLE]


def final_outputs(wildcards):
    return [
        ATLAS_H5,
        REJECTS_CSV,
        QC_FIGURE,
        SPLIT_MANIFEST,
        *expand(LOSS_CURVES, run=["split", "full"]),
        FID_TABLE,
        FID_FIGURE,
        CHECKPOINT_SELECTION,
        MERGED_SCREENING,
        SCREENING_COUNTS,
        SCREENING_COUNTS_FIGURE,
        MEMORIZATION,
        SCREENING_REVIEW,
        PAIRS_REVIEW,
        PAIR_VERDICTS,
        RELEASE_PACKAGE,
        *expand(
            SAMPLE_GRID, sample_set=config["sampling"]["sets"], ckpt=selected_labels()
        ),
        *turing_outputs(),
    ]
