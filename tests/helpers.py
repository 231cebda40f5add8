"""Settings, tiny models and readers that several test modules share (fixtures live in conftest).

Kept in one place so that a test module never imports another test module.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import zarr
from conftest import write_workdir_config

from radsynth.core.settings.sample import Architecture
from radsynth.sample.facing import new_classifier, save_classifier
from radsynth.sample.gather import gather_checkpoint
from radsynth.sample.sampler import sample_shard
from radsynth.train.model import UNetSettings, build_unet

#: Provenance the tests hand to every writer; its values are only checked to be carried along.
PROVENANCE = {"radsynth_version": "test", "code_revision": "test", "config_hash": "abc"}

# ---------------------------------------------------------------- sampling

#: DDPM's linear schedule: a simple stand-in for the trained model's betas.
BETAS = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)

#: The paper's network (lucidrains' Unet) at 16 px.
TINY_LUCIDRAINS = UNetSettings(
    architecture="lucidrains",
    sample_size=16,
    base_channels=8,
    channel_multipliers=(1, 2),
    attention_levels=(False, False),
    attention_head_dim=8,
    dropout=0.0,
)


def tiny_unet(seed: int = 0) -> torch.nn.Module:
    """The paper's network (lucidrains' Unet) at 16 px, randomly initialised from `seed`."""
    torch.manual_seed(seed)
    return build_unet(TINY_LUCIDRAINS).eval()


def shard_kwargs(tmp_path: Path, **overrides) -> dict:
    """Arguments of sample_shard for a 6-image shard of 8 DDPM steps on the CPU."""
    settings = dict(
        work_dir=tmp_path / "work",
        checkpoint_label="step000010",
        shard_index=0,
        first_global_index=0,
        n_images=6,
        batch_size=3,
        base_seed=1,
        sampler="ddpm",
        steps=8,
        solver_order=None,
        clip_sample=True,
        quantization="round",
        weights="ema",
        prediction_type="v_prediction",
        device="cpu",
        provenance=PROVENANCE,
        progress=False,
    )
    return {**settings, **overrides}


def gathered_set(folder: Path, sample_set: str = "large") -> Path:
    """A gathered set of three 16 px images of checkpoint ckpt002 in `folder`, as the sample stage
    leaves it (store, facing classifier, manifest); returns the manifest."""
    store = sample_shard(
        tiny_unet(),
        BETAS,
        folder / "shard0.zarr",
        **shard_kwargs(
            folder,
            checkpoint_label=f"{sample_set}/ckpt002",
            base_seed=1,
            shard_index=0,
            first_global_index=0,
            n_images=3,
            batch_size=3,
            steps=2,
        ),
    )
    save_classifier(
        new_classifier(Architecture(channels=(4, 8), analysis_size=16), image_size=16, seed=3),
        folder / "facing.safetensors",
    )
    gather_checkpoint(
        [store],
        folder / "facing.safetensors",
        folder / "manifest.csv",
        checkpoint_label="ckpt002",
        batch_size=4,
        provenance=PROVENANCE,
        progress=False,
    )
    return folder / "manifest.csv"


def read_store(store: Path) -> dict[str, np.ndarray]:
    """Every array of a sample store, read with zarr itself rather than radsynth's reader."""
    group = zarr.open_group(store, mode="r", zarr_format=3)
    return {name: group[name][:] for name in ("images", "seed", "global_index", "batch_done")}


# ---------------------------------------------------------------- training

#: Shape fields the smaller test models inherit (the paper preset itself is config/csxa.yaml).
BASE_MODEL = {
    "architecture": "diffusers",
    "sample_size": 256,
    "base_channels": 64,
    "channel_multipliers": [1, 2, 4, 8],
    "layers_per_block": 2,
    "attention_levels": [False, False, False, True],
    "attention_head_dim": 32,
    "norm_num_groups": 32,
    "dropout": 0.0,
}
TINY_MODEL = {
    **BASE_MODEL,
    "sample_size": 16,
    "base_channels": 8,
    "channel_multipliers": [1, 2],
    "layers_per_block": 1,
    "attention_levels": [False, True],
    "attention_head_dim": 8,
    "norm_num_groups": 4,
}
PAPER_EMA = {
    "decay": 0.995,
    "update_every": 10,
    "update_after_step": 100,
    "inv_gamma": 1.0,
    "power": 2 / 3,
}


def tiny_config(**training: object) -> dict:
    """The model, diffusion and training sections of a 12-step run of TINY_MODEL."""
    return {
        "model": dict(TINY_MODEL),
        "diffusion": {
            "timesteps": 1000,
            "sigmoid_start": -3,
            "sigmoid_end": 3,
            "sigmoid_tau": 1,
            "beta_clamp_max": 0.999,
        },
        "training": {
            "seed": 7,
            "num_steps": 12,
            "batch_size": 3,
            "gradient_accumulation_steps": 2,
            "learning_rate": 1e-3,
            "adam_betas": [0.9, 0.99],
            "max_grad_norm": 1.0,
            "mixed_precision": "no",
            "horizontal_flip": True,
            "checkpoint_every": 4,
            "state_every": 4,
            "checkpoint_dtype": "float32",
            "val_batch_size": 3,
            "compile": False,
            "ema": dict(PAPER_EMA),
            **training,
        },
    }


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def loss_columns(run_dir: Path) -> list[tuple[str, ...]]:
    """The loss log without wall time (which differs between runs)."""
    return [
        (r["step"], r["train_loss"], r["val_loss"], r["val_loss_ema"], r["lr"])
        for r in read_rows(run_dir / "loss_log.csv")
    ]


# ---------------------------------------------------------------- workflow


def tiny(config: dict, workdir: Path) -> dict:
    """The demo config shrunk to a few minutes of CPU, written to `workdir`'s config/config.yaml."""
    config["data"]["demo"].update(n_images=40, min_side=96, max_side=160)
    config["preprocess"]["size"] = 32
    config["model"].update(base_channels=8, attention_head_dim=8, norm_num_groups=4)
    config["training"].update(num_steps=20, checkpoint_every=5, state_every=5)
    config["checkpoints"]["selected"] = [1, 2, 4]
    config["sampling"].update(steps=4, batch_size=4)
    config["sampling"]["sets"] = {
        "initial": {"n_images": 6, "images_per_shard": 6},
        "large": {"n_images": 6, "images_per_shard": 4},
    }
    config["evaluate"]["every_steps"] = 10
    config["evaluate"]["samples"].update(n_images=6, images_per_shard=6, steps=4)
    config["facing"]["training"]["steps"] = 30
    config["turing"]["n_quartets"] = 4
    # 20 training steps make noise, which the screen rightly proposes to exclude, every image; with
    # nothing proposed, the release has images to package.
    config["audit"]["screen"]["threshold"] = 0.0
    config["audit"]["review"]["page_size"] = 4  # two review pages per 6-image set
    config["audit"]["sample_sets"] = ["initial", "large"]  # ids must stay apart across sets
    # The landmark model on this atlas's 34 train images (6 held out): measured on this split,
    # 100 steps give a held-out MRE of 1.09 px against the mean shape's 2.51 (0.43 of it; 60 steps:
    # 1.28, 0.51). A 6-image utility set from the split run, one real fraction and one seed: five
    # students.
    config["anatomy"]["training"].update(max_steps=100, eval_every=20)
    config["anatomy"]["utility"] = {
        "samples": {"n_images": 6, "images_per_shard": 6},
        "fractions": [0.5],
        "seeds": [0],
    }
    write_workdir_config(workdir, config)
    return config


# ---------------------------------------------------------------- Turing test

CHECKPOINTS = ("ckpt034", "ckpt040", "ckpt080")
MEANS = {"real": 3.323, "ckpt034": 3.228, "ckpt040": 3.258, "ckpt080": 3.320}  # paper, Results


def key_frame(n_quartets: int) -> pd.DataFrame:
    """Quartet q puts the real image at position ((q - 1) % 4) + 1, checkpoints after it."""
    rows = []
    for quartet in range(1, n_quartets + 1):
        groups = ["real", *CHECKPOINTS]
        shift = (quartet - 1) % 4
        groups = groups[-shift:] + groups[:-shift] if shift else groups
        rows += [
            {"quartet": quartet, "position": p, "group": g, "image": f"q{quartet}_{g}.png"}
            for p, g in enumerate(groups, start=1)
        ]
    return pd.DataFrame(rows)


def write_qualtrics(path: Path, ratings: pd.DataFrame, extra: dict[str, str] | None = None) -> Path:
    """A choice-text export: ids, question texts, ImportId JSON, then one row per rater."""
    quartets = sorted(ratings["quartet"].unique())
    positions = range(1, ratings["position"].max() + 1)
    questions = [
        c for q in quartets for c in [f"Q{q}_real", *[f"Q{q}_rating_{p}" for p in positions]]
    ]
    columns = ["StartDate", "ResponseId", "Status", "rater_id", *questions, *(extra or {})]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerow([f"text of {c}" for c in columns])
        writer.writerow([f'{{"ImportId":"{c}"}}' for c in columns])
        for rater, rows in ratings.groupby("rater"):
            answers = {
                "StartDate": "2025-01-01 10:00:00",
                "ResponseId": f"R_{rater}",
                "Status": "IP Address",
                "rater_id": rater,
            }
            for (quartet, position), row in rows.set_index(["quartet", "position"]).iterrows():
                if row["chosen_real"]:
                    answers[f"Q{quartet}_real"] = f"Image {position}"
                answers[f"Q{quartet}_rating_{position}"] = {
                    1: "1 = unrealistic",
                    4: "4 = fully realistic",
                }.get(row["rating"], str(row["rating"]))
            writer.writerow([answers.get(c, (extra or {}).get(c, "")) for c in columns])
    return path
