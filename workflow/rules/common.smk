import json
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError

# Snakemake's report() under another name: a line starting with `report` is read as the directive.
from snakemake.io import report as report_item
from snakemake.logging import logger

from radsynth.core.config import FID_SAMPLE_SET, UTILITY_SAMPLE_SET, canonical, pick
from radsynth.core.resources import job_memory_mb
from radsynth.core.settings.data import LocalOrigin
from radsynth.core.settings.sample import MULTISTEP_SAMPLERS
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
#: The landmark model (anatomy stage): trained on the split run's train subset.
LANDMARK_MODEL = "results/anatomy/landmark_model.safetensors"
#: The landmark model's held-out evaluation (MRE, SDR, per landmark, against the mean shape).
LANDMARK_EVALUATION = "results/anatomy/evaluation"
#: Landmarks and geometry of the split's held-out real images (the reference of every distance
#: and of the anatomical screen's ranges).
HELD_OUT_LANDMARKS = "results/anatomy/evaluation/held_out_landmarks.csv"
#: Landmarks and geometry of every image of one sampling set (radsynth landmarks' CSV format).
SET_LANDMARKS = "results/anatomy/landmarks/{sample_set}/{ckpt}.csv"
#: How many atlas images carry keypoints (a Snakemake checkpoint: none skips the anatomy stage).
ATLAS_KEYPOINTS = "results/anatomy/atlas_keypoints.json"
#: What the anatomy stage made, or why it was skipped; its job waits for every anatomy output.
ANATOMY_STAGE = "results/anatomy/stage.json"
LANDMARK_SUMMARY = f"{LANDMARK_EVALUATION}/summary.csv"
LANDMARK_PER_LANDMARK = f"{LANDMARK_EVALUATION}/per_landmark.csv"
#: Resume states of the landmark model and of the utility students (never outputs: a rerun
#: continues from them), one folder per run identity.
LANDMARK_WORK = "results/anatomy/.work/landmark_model"
UTILITY_WORK = "results/anatomy/.work/utility"
#: Train on synthetic, test on real: one row per (arm, seed), then the per-arm summary.
UTILITY_STUDENTS = "results/anatomy/utility/students.csv"
UTILITY_SUMMARY = "results/anatomy/utility/summary.csv"
UTILITY_FIGURE = "results/anatomy/utility/utility.png"


def anatomy_training_settings():
    """anatomy.training without its resume cadence (which changes no result)."""
    return {
        key: value
        for key, value in canonical(config["anatomy"]["training"]).items()
        if key != "state_every"
    }


def curvature_thresholds():
    """anatomy.curvature_thresholds_deg: the curvature class of every landmark table's rows."""
    return canonical(config["anatomy"]["curvature_thresholds_deg"])


def atlas_has_keypoints():
    """Whether the atlas has keypoints to learn (known once atlas_keypoints has run); without any,
    the anatomy stage is skipped with a message."""
    record = Path(checkpoints.atlas_keypoints.get().output[0])
    if json.loads(record.read_text(encoding="utf-8"))["annotated_images"]:
        return True
    logger.info(
        f"Anatomy: {ATLAS_H5} has no keypoints (a source without annotations); skipping the "
        "landmark model, the sets' landmarks and the utility experiment."
    )
    return False


def utility_checkpoint():
    """Label of the split run's last checkpoint: the utility set is sampled from it (the full run
    trained on the held-out images the students are tested on)."""
    training = config["training"]
    return checkpoint_label(training["num_steps"] // training["checkpoint_every"])


def utility_shard_stores(wildcards):
    return set_shard_stores(UTILITY_SAMPLE_SET, utility_checkpoint())


def landmark_sets():
    """(sample set, checkpoint label) of every set the landmark model measures: each FID set and
    each sampled set at every selected checkpoint."""
    fid_sets = [(FID_SAMPLE_SET, checkpoint_label(n)) for n in fid_checkpoints()]
    sampled = [
        (sample_set, ckpt)
        for sample_set in config["sampling"]["sets"]
        for ckpt in selected_labels()
    ]
    return fid_sets + sampled


def anatomy_outputs(wildcards):
    """The anatomy stage's final outputs (the fidelity ones included); none for an atlas without
    keypoints. Only the stage's record waits for the keypoint check (a Snakemake checkpoint), so
    a dry run before the atlas exists still plans every other stage."""
    if not atlas_has_keypoints():
        return []
    return [
        LANDMARK_MODEL,
        LANDMARK_SUMMARY,
        LANDMARK_PER_LANDMARK,
        HELD_OUT_LANDMARKS,
        *(
            SET_LANDMARKS.format(sample_set=sample_set, ckpt=ckpt)
            for sample_set, ckpt in landmark_sets()
        ),
        UTILITY_SUMMARY,
        UTILITY_FIGURE,
        *anatomy_fidelity_outputs(),
        SCREEN_AUCS,
        SCREEN_AUCS_FIGURE,
    ]


#: Anatomical fidelity (anatomy stage, issue 21 item 3): the landmark encoder's features of every
#: atlas image, each FID checkpoint's landmark-feature FD, the real-vs-real floor (a record and
#: each half's landmark table), the geometry-distance and FD tables and their figure.
ATLAS_LANDMARK_FEATURES = "results/anatomy/fidelity/atlas_landmark_features.npz"
LANDMARK_FD_ROW = "results/anatomy/fidelity/landmark_fd/{ckpt}.json"
REAL_FLOOR = "results/anatomy/fidelity/real_floor.json"
REAL_FLOOR_HALVES = [
    f"results/anatomy/fidelity/real_floor_half{half}.csv" for half in (1, 2)
]
ANATOMY_FIDELITY = "results/anatomy/fidelity.csv"
LANDMARK_FD_TABLE = "results/anatomy/landmark_fd.csv"
ANATOMY_FIGURE = "results/anatomy/fidelity_vs_step.png"
#: The two-sample classifier (item 6): one row per FID checkpoint, the table and its figure.
TWO_SAMPLE_ROW = "results/anatomy/two_sample/{ckpt}.json"
TWO_SAMPLE_TABLE = "results/anatomy/two_sample.csv"
TWO_SAMPLE_FIGURE = "results/anatomy/two_sample.png"


def fid_checkpoint_labels():
    return [checkpoint_label(number) for number in fid_checkpoints()]


def landmark_fd_rows(wildcards):
    return expand(LANDMARK_FD_ROW, ckpt=fid_checkpoint_labels())


def two_sample_rows(wildcards):
    return expand(TWO_SAMPLE_ROW, ckpt=fid_checkpoint_labels())


def fidelity_set_tables(wildcards):
    """The landmark table of every set the fidelity table compares, in `fidelity_sets` order."""
    return [
        SET_LANDMARKS.format(sample_set=sample_set, ckpt=ckpt)
        for sample_set, ckpt in landmark_sets()
    ]


def fidelity_sets(wildcards):
    """[set name, training step] of each of `fidelity_set_tables`."""
    every = config["training"]["checkpoint_every"]
    return [
        [sample_set, int(ckpt[len("ckpt") :]) * every]
        for sample_set, ckpt in landmark_sets()
    ]


def anatomy_fidelity_outputs():
    """The fidelity tables and figure and the two-sample table and figure."""
    return [
        ANATOMY_FIDELITY,
        LANDMARK_FD_TABLE,
        ANATOMY_FIGURE,
        TWO_SAMPLE_TABLE,
        TWO_SAMPLE_FIGURE,
    ]


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
    sample_set="|".join(
        [*config["sampling"]["sets"], FID_SAMPLE_SET, UTILITY_SAMPLE_SET]
    ),
    ckpt=r"ckpt[0-9][0-9][0-9]+",
    shard=r"\d+",
    step=r"\d+",
    filename="|".join(re.escape(spec["filename"]) for spec in csxa_archives().values())
    or "no-archive-configured",
    weights_file="|".join(re.escape(name) for name in configured_weights())
    or "no-weights-configured",


def raw_atlas_dirs(wildcards):
    """The raw atlas as image and annotation folders, and the per-image metadata table (pixel
    spacing) where the source has one, from the configured source."""
    source = config["data"]["source"]
    if source == "demo":
        return {
            "images": "resources/demo_atlas/images",
            "annotations": "resources/demo_atlas/annotations",
            "metadata": "resources/demo_atlas/metadata.csv",
        }
    section = config["data"][source]
    folders = (
        pick(section, "images", "annotations")
        if source == "local"
        else {
            "images": "resources/csxa/unpacked/png",
            "annotations": "resources/csxa/unpacked/json",
        }
    )
    table = section["metadata_table"]
    return folders | ({} if table is None else {"metadata": table})


def data_origin_keys():
    """The `data` keys the release card states the images' origin from: the source, and
    for the user's own images what they stated of them (settings.data.LocalOrigin)."""
    data = config["data"]
    if data["source"] != "local":
        return pick(data, "source")
    return pick(data, "source") | {
        "local": pick(data["local"], *LocalOrigin.model_fields)
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
    with `auto`: its last step, where the selection needs the finished run anyway); the utility
    set's: the split run's last step."""
    if wildcards.sample_set == UTILITY_SAMPLE_SET:
        return train_done("split")
    if AUTO_SELECTION and wildcards.sample_set != FID_SAMPLE_SET:
        return train_done("full")
    return reached(
        "full", checkpoint_number(wildcards) * config["training"]["checkpoint_every"]
    )


def sampling_settings(wildcards):
    """The sampling keys that change the images (gather and figure settings are not among them);
    the FID set has its own sampler and step count, the utility set the section's own. The solver
    order only for the samplers that read it: a change of it reruns no DDPM or DDIM set.
    """
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
    if settings["sampler"] in MULTISTEP_SAMPLERS:
        settings |= pick(config["sampling"], "solver_order")
    return settings


def set_plan(sample_set):
    """How many images a set has and how they are sharded."""
    if sample_set == FID_SAMPLE_SET:
        return pick(config["evaluate"]["samples"], "n_images", "images_per_shard")
    if sample_set == UTILITY_SAMPLE_SET:
        return canonical(config["anatomy"]["utility"]["samples"])
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


#: The screens (plausibility, anatomical, combined) against corrupted held-out images.
SCREEN_AUCS = "results/audit/screening/screen_aucs.csv"
SCREEN_AUCS_FIGURE = "results/audit/screening/screen_aucs.png"


def screening_landmarks(wildcards):
    """The anatomical screen's inputs to screen_samples: the held-out real images' landmark table
    and each audited set's (in audited_sets' order); none for an atlas without keypoints, whose
    sets are screened by plausibility alone."""
    if not atlas_has_keypoints():
        return {}
    return {
        "held_out_landmarks": HELD_OUT_LANDMARKS,
        "landmarks": [
            SET_LANDMARKS.format(sample_set=sample_set, ckpt=ckpt)
            for sample_set, ckpt in audited_sets()
        ],
    }


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


def release_anatomy_tables(wildcards):
    """The anatomy stage's tables the dataset card reads; none for an atlas without keypoints,
    whose card says the stage was skipped."""
    if not atlas_has_keypoints():
        return {}
    return {
        "landmark_summary": LANDMARK_SUMMARY,
        "fidelity": ANATOMY_FIDELITY,
        "two_sample": TWO_SAMPLE_TABLE,
        "utility": UTILITY_SUMMARY,
    }


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
        ANATOMY_STAGE,
    ]
