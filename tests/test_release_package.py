"""Tests of the release package and its privacy gate (radsynth.release.package, .privacy, .card).

Inputs are made through the real writers: two checkpoints of one sample set sampled by a tiny,
untrained U-Net and gathered with a seeded facing classifier; a merged screening table, counts
and memorization files written with `write_table`; an atlas of random noise images written with
`write_atlas`. Images of an untrained model are noise-like: what is checked is the package's
bookkeeping, archives, checksums and the gate, not image quality.
"""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from pathlib import Path
from typing import get_args

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import BETAS, PROVENANCE, shard_kwargs, tiny_unet
from PIL import Image

from radsynth.anatomy.tables import FIDELITY_COLUMNS
from radsynth.core.config import ConfigError
from radsynth.core.settings.data import DataSettings, ReleaseLicence
from radsynth.core.settings.sample import Architecture
from radsynth.core.tables import write_table
from radsynth.data.atlas import atlas_from_images, load_atlas, write_atlas
from radsynth.release.card import (
    DATA_ORIGINS,
    FIGSHARE_LICENCES,
    AnatomyFiles,
    data_origin,
    screening_sentence,
)
from radsynth.release.package import build_package, kept_images
from radsynth.release.privacy import PrivacyGateError
from radsynth.sample.facing import new_classifier, save_classifier
from radsynth.sample.gather import gather_checkpoint
from radsynth.sample.sampler import sample_shard
from radsynth.sample.store import open_left_facing

LABELS = ("large/ckpt002", "large/ckpt004")
#: Screening outcome of the excluded images: who excluded them.
EXCLUDED = {
    "large-ckpt002_000001": "r1",
    "large-ckpt004_000000": "automated screen",
    "large-ckpt004_000005": "r1;r2",
}
KEPT = [
    "large-ckpt002_000000",
    "large-ckpt002_000002",
    "large-ckpt002_000003",
    "large-ckpt002_000004",
    "large-ckpt002_000005",
    "large-ckpt004_000001",
    "large-ckpt004_000002",
    "large-ckpt004_000003",
    "large-ckpt004_000004",
]
#: Kept images a reviewer looked at and included; all others were left to the screen.
INCLUDED_BY = {"large-ckpt002_000003": "r2"}
N_REAL = 8
SETTINGS = {
    "title": "Synthetic lateral cervical spine radiographs (test)",
    "description": "Test release of a tiny untrained model.",
    "keywords": ["radiograph", "diffusion model"],
    "categories": [24, 25],
    "authors": [{"name": "Ada Author", "orcid": "0000-0002-1825-0097"}, {"name": "Bo Builder"}],
    "max_archive_bytes": 1800,
    "near_duplicate_patch_distance": 0.05,
}
RUN_PROVENANCE = {
    "radsynth_version": "test",
    "code_revision": "abc123",
    "config_hash": "cfg456",
    "created_utc": "2030-01-01T00:00:00+00:00",
}
CONFIG_VALUES = {"training.checkpoint_every": 50, "sampling.sampler": "ddpm", "sampling.steps": 3}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """Every input of build_package, written by the stages' own writers."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("release")
    unet = tiny_unet()
    classifier = new_classifier(
        Architecture(channels=(4, 8), analysis_size=16), image_size=16, seed=3
    )
    save_classifier(classifier, root / "facing.safetensors")
    manifests = []
    for label in LABELS:
        folder = root / "samples" / label
        stores = []
        for shard, first in enumerate((0, 3)):
            stores.append(
                sample_shard(
                    unet,
                    BETAS,
                    folder / f"shard{shard}.zarr",
                    **shard_kwargs(
                        folder,
                        checkpoint_label=label,
                        shard_index=shard,
                        first_global_index=first,
                        n_images=3,
                        batch_size=3,
                        steps=3,
                    ),
                )
            )
        gather_checkpoint(
            stores,
            root / "facing.safetensors",
            folder / "manifest.csv",
            checkpoint_label=label.split("/")[1],
            batch_size=6,
            provenance=PROVENANCE,
            progress=False,
        )
        manifests.append(folder / "manifest.csv")
    write_table(merged_table(manifests), root / "merged.csv", provenance=PROVENANCE)
    write_table(
        pd.DataFrame(
            [
                ["large/ckpt002", 6, 1, 5, 1, 0],
                ["large/ckpt004", 6, 2, 4, 1, 1],
                ["total", 12, 3, 9, 2, 1],
            ],
            columns=[
                "checkpoint",
                "generated",
                "excluded",
                "kept",
                "excluded_by_reviewers",
                "excluded_by_screen",
            ],
        ),
        root / "counts.csv",
        provenance=PROVENANCE,
    )
    memorization = root / "memorization"
    write_memorization(memorization, nearest_rows())
    real = np.random.default_rng(7).integers(0, 256, size=(N_REAL, 16, 16), dtype=np.uint8)
    write_atlas(root / "atlas.h5", atlas_from_images(real, [f"real{i:03d}" for i in range(N_REAL)]))
    return {
        "merged_csv": root / "merged.csv",
        "counts_csv": root / "counts.csv",
        "manifests": manifests,
        "memorization_dir": memorization,
        "atlas_h5": root / "atlas.h5",
    }


def merged_table(manifests: list[Path]) -> pd.DataFrame:
    """The audit's merged screening table for every gathered image, with the EXCLUDED decisions."""
    rows = []
    for label, manifest_csv in zip(LABELS, manifests):
        manifest = open_left_facing(manifest_csv).manifest
        for image, record in manifest.iterrows():
            rows.append(
                {
                    "row": len(rows) + 1,
                    "image_id": image,
                    "checkpoint": label,
                    "shard": record["shard"],
                    "index": record["index"],
                    "seed": record["seed"],
                    "flipped": record["flipped"],
                    "plausibility": 0.5,
                    "atypical_x": 0.5,
                    "atypical_y": 0.5,
                    "nearest_real_id": "real000",
                    "nearest_real_similarity": 0.5,
                    "mean": 100.0,
                    "std": 30.0,
                    "p01": 2.0,
                    "p99": 250.0,
                    "proposed": "exclude" if image in EXCLUDED else "include",
                    "final_decision": "exclude" if image in EXCLUDED else "include",
                    "decided_by": EXCLUDED.get(image, INCLUDED_BY.get(image, "automated screen")),
                    "reasons": "",
                    "conflict": False,
                }
            )
    return pd.DataFrame(rows)


def nearest_rows() -> pd.DataFrame:
    """nearest_real.csv of all 12 synthetic images: real image i % 8, similarity 0.50 + i / 100."""
    ids = [f"large-ckpt00{c}_{i:06d}" for c in (2, 4) for i in range(6)]
    return pd.DataFrame(
        {
            "image_id": ids,
            "nearest_real_id": [f"real{i % N_REAL:03d}" for i in range(12)],
            "similarity": [0.5 + i / 100 for i in range(12)],
            "patch_distance": 0.3,
        }
    )


def write_memorization(folder: Path, nearest: pd.DataFrame) -> None:
    encoder = {"encoder_name": "random-test", "encoder_weights": "random-init"}
    write_table(
        pd.DataFrame(
            {
                "rank": [1],
                "real_id": ["real003"],
                "synthetic_id": ["large-ckpt004_000003"],
                "similarity": [0.61],
                "patch_distance": [0.3],
                "encoder": ["random-test"],
                "encoder_weights": ["random-init"],
            }
        ),
        folder / "pairs.csv",
        provenance=encoder,
    )
    Image.new("L", (8, 8), 128).save(folder / "pairs_page01.png")
    write_table(nearest, folder / "nearest_real.csv", provenance=encoder)


def kept_path(image: str) -> str:
    """Where an image goes: its checkpoint's folder, named by the id's prefix."""
    return f"images/{image.split('_')[0]}/{image}.png"


def build(out: Path, inputs: dict, **overrides) -> list[str]:
    arguments = {
        **inputs,
        "settings": SETTINGS,
        "data": {"source": "csxa"},
        "checkpoint_every": 50,
        "config_values": CONFIG_VALUES,
        "provenance": RUN_PROVENANCE,
        "anatomy": None,
        **overrides,
    }
    return build_package(out, **arguments)


@pytest.fixture(scope="module")
def package(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("built") / "package"
    build(out, inputs)
    return out


def left_facing(inputs: dict, image: str) -> np.ndarray:
    """An image as the sample stage's reader shows it, left-facing."""
    manifest = inputs["manifests"][LABELS.index("large/" + image.split("_")[0].split("-")[1])]
    return open_left_facing(manifest)[image]


def archive_members(package: Path) -> dict[str, tuple[str, bytes]]:
    """Zip member name -> (archive, bytes) over every images_part*.zip; a repeated member fails."""
    members = {}
    for archive in sorted(package.glob("images_part*.zip")):
        with zipfile.ZipFile(archive) as opened:
            for info in opened.infolist():
                assert info.filename not in members
                members[info.filename] = (archive.name, opened.read(info))
    return members


# ----------------------------------------------------------------------------- contents


def test_package_holds_exactly_the_upload_files(package):
    names = sorted(path.name for path in package.iterdir())
    parts = [name for name in names if name.startswith("images_part")]
    assert names == sorted(
        [
            "README.md",
            "checksums.md5",
            "counts.csv",
            "figshare.json",
            "images.csv",
            "memorization_pairs.zip",
            "privacy_gate.json",
            *parts,
        ]
    )
    assert parts == [f"images_part{n:03d}.zip" for n in range(1, len(parts) + 1)]


def test_archives_hold_every_kept_image_once_in_per_checkpoint_folders(package):
    members = archive_members(package)
    assert sorted(members) == [kept_path(image) for image in KEPT]
    assert not any(excluded in name for name in members for excluded in EXCLUDED)


def test_archives_split_below_the_limit(package):
    parts = sorted(package.glob("images_part*.zip"))
    assert len(parts) >= 3
    assert all(part.stat().st_size <= SETTINGS["max_archive_bytes"] for part in parts)


def test_unzipped_images_are_the_left_facing_samples_as_plain_gray_png(package, inputs):
    for name, (_, data) in archive_members(package).items():
        with Image.open(io.BytesIO(data)) as image:
            assert (image.format, image.mode) == ("PNG", "L")
            np.testing.assert_array_equal(np.asarray(image), left_facing(inputs, Path(name).stem))
        assert png_chunks(data) == ["IHDR", "IDAT", "IEND"]  # no tIME or text chunk


def png_chunks(data: bytes) -> list[str]:
    """Chunk types of a PNG, merging repeated IDAT chunks."""
    chunks, position = [], 8
    while position < len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8].decode("ascii")
        if not chunks or chunks[-1] != kind:
            chunks.append(kind)
        position += 12 + length
    return chunks


def test_archive_members_have_a_fixed_time_and_path_order(package):
    for archive in sorted(package.glob("images_part*.zip")):
        with zipfile.ZipFile(archive) as opened:
            infos = opened.infolist()
        assert [info.filename for info in infos] == sorted(info.filename for info in infos)
        assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
        assert {info.compress_type for info in infos} == {zipfile.ZIP_STORED}


def test_metadata_rows(package, inputs):
    table = pd.read_csv(package / "images.csv", dtype={"decided_by": str}, keep_default_na=False)
    assert list(table.columns) == [
        "image_id",
        "sample_set",
        "checkpoint",
        "training_step",
        "sampler",
        "sampler_steps",
        "weights",
        "seed",
        "flipped",
        "screening_decision",
        "decided_by",
        "archive",
        "path",
    ]
    assert list(table["image_id"]) == KEPT
    assert list(table["checkpoint"]) == ["ckpt002"] * 5 + ["ckpt004"] * 4
    assert list(table["training_step"]) == [100] * 5 + [200] * 4
    assert set(table["sample_set"]) == {"large"} and set(table["sampler"]) == {"ddpm"}
    assert set(table["sampler_steps"]) == {3} and set(table["weights"]) == {"ema"}
    assert set(table["screening_decision"]) == {"include"}
    assert (
        list(table["decided_by"])
        == ["automated screen", "automated screen", "r2"] + ["automated screen"] * 6
    )
    assert list(table["path"]) == [kept_path(image) for image in KEPT]
    for label, manifest_csv in zip(LABELS, inputs["manifests"]):
        manifest = open_left_facing(manifest_csv).manifest
        mine = table[table["image_id"].str.startswith(label.replace("/", "-"))]
        assert list(mine["seed"]) == list(manifest.loc[mine["image_id"], "seed"])
        assert list(mine["flipped"]) == list(manifest.loc[mine["image_id"], "flipped"])
    members = archive_members(package)
    assert [members[path][0] for path in table["path"]] == list(table["archive"])


def test_counts_table_is_table_s1(package):
    assert (package / "counts.csv").read_text() == (
        "checkpoint,generated,excluded,kept,excluded_by_reviewers,excluded_by_screen\n"
        "large/ckpt002,6,1,5,1,0\n"
        "large/ckpt004,6,2,4,1,1\n"
        "total,12,3,9,2,1\n"
    )


def test_memorization_pairs_are_one_archive_of_the_audits_files(package, inputs):
    with zipfile.ZipFile(package / "memorization_pairs.zip") as opened:
        assert opened.namelist() == [
            "memorization_pairs/pairs.csv",
            "memorization_pairs/pairs_page01.png",
        ]
        for name in ("pairs.csv", "pairs_page01.png"):
            assert (
                opened.read(f"memorization_pairs/{name}")
                == (inputs["memorization_dir"] / name).read_bytes()
            )


def test_md5sum_verifies_every_other_file(package):
    result = subprocess.run(
        ["md5sum", "-c", "checksums.md5"], cwd=package, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    listed = [
        line.split("  ", 1)[1] for line in (package / "checksums.md5").read_text().splitlines()
    ]
    assert listed == sorted(path.name for path in package.iterdir() if path.name != "checksums.md5")


#: The fixture's screening, counted by hand from EXCLUDED and INCLUDED_BY: 3 images reviewed
#: (by r1, r2 and both), 9 left to the screen; excluded: 2 by reviewers, 1 by the screen.
FIXTURE_SCREENING = (
    "An automated plausibility screen proposed images for exclusion; people reviewed 3 of the 12 "
    "generated images (2 reviewers) and the screen alone decided the other 9. Of 12 generated "
    "images, 3 were excluded (2 by reviewers, 1 by the screen alone) and 9 are released."
)
CSXA_DATA = (
    "The model learnt from the 8 images of the Cervical Spine X-ray Atlas (CSXA) V3.0, lateral "
    "cervical-spine radiographs released under CC BY 4.0 (Science Data Bank, "
    "doi:10.57760/sciencedb.15391)."
)
CSXA_CITATION = (
    "Credit the data the model learnt from: Ran Y. Cervical Spine X-ray Atlas (CSXA) V3.0. "
    "Science Data Bank; 2024. doi:10.57760/sciencedb.15391. Ran Y, Qin W, Qin C, et al. A "
    "high-quality dataset featuring classified and annotated cervical spine X-ray atlas. Sci "
    "Data. 2024;11(1):625."
)


def test_figshare_metadata(package):
    assert json.loads((package / "figshare.json").read_text()) == {
        "title": "Synthetic lateral cervical spine radiographs (test)",
        "description": (
            f"Test release of a tiny untrained model.\n\n{CSXA_DATA} {FIXTURE_SCREENING}"
        ),
        "keywords": ["radiograph", "diffusion model"],
        "categories": [24, 25],
        "license": 1,
        "authors": [
            {"name": "Ada Author", "orcid_id": "0000-0002-1825-0097"},
            {"name": "Bo Builder"},
        ],
        "defined_type": "dataset",
    }


def card_paragraphs(package: Path) -> list[str]:
    return (package / "README.md").read_text().split("\n\n")


def test_dataset_card_of_csxa_data(package):
    card = (package / "README.md").read_text()
    paragraphs = card_paragraphs(package)
    for text in (
        "# Synthetic lateral cervical spine radiographs (test)",
        "9 synthetic lateral cervical-spine",
        "| large | ckpt002 | 100 | ddpm | 3 | ema | 5 |",
        "| large | ckpt004 | 200 | ddpm | 3 | ema | 4 |",
        "| training.checkpoint_every | 50 |",
        "| large/ckpt004 | 6 | 2 | 4 | 1 | 1 |",
        "against the 8 real atlas images",
        "random-test encoder (weights random-init)",
        "| code_revision | abc123 |",
        "| images_part001.zip |",
        "| memorization_pairs.zip |",
    ):
        assert text in card, text
    made = paragraphs[paragraphs.index("## How the images were made") + 1]
    assert made.startswith(f"{CSXA_DATA} A denoising diffusion probabilistic model (DDPM) was ")
    screening = paragraphs[paragraphs.index("## Screening") + 1]
    assert screening.startswith(f"{FIXTURE_SCREENING} Per checkpoint (`counts.csv`")
    assert paragraphs[paragraphs.index("## Licence") + 1] == (
        "CC BY 4.0, the licence of the Cervical Spine X-ray Atlas (CSXA) V3.0, whose images the "
        "model learnt from; it asks that CSXA be credited, as below."
    )
    assert paragraphs[paragraphs.index("## How to cite") + 1 :][:2] == [
        "Cite this data set by the DOI figshare gives it on publication: Ada Author, Bo Builder. "
        "Synthetic lateral cervical spine radiographs (test). figshare.",
        CSXA_CITATION,
    ]
    assert "created_utc" not in card and "2030-01-01" not in card
    assert "phantom" not in card


def test_dataset_card_of_demo_data_names_the_phantoms_not_csxa(inputs, tmp_path):
    build(tmp_path / "package", inputs, data={"source": "demo"})
    paragraphs = card_paragraphs(tmp_path / "package")
    made = paragraphs[paragraphs.index("## How the images were made") + 1]
    assert made.startswith(
        "The model learnt from the 8 images of the radsynth procedural phantom atlas, lateral "
        "cervical-spine phantoms drawn by radsynth's own code (`radsynth.demo.phantom`), not "
        "radiographs of any person. A denoising diffusion"
    )
    assert paragraphs[paragraphs.index("## Licence") + 1] == (
        "CC BY 4.0, the licence radsynth gives the releases of its demo: the phantoms the model "
        "learnt from are radsynth's own drawings and hold no one else's images."
    )
    assert paragraphs[paragraphs.index("## How to cite") + 2] == (
        "Credit the data the model learnt from: the radsynth procedural phantom atlas "
        "(`radsynth.demo.phantom`), at the code revision under Provenance below."
    )
    card = "\n\n".join(paragraphs)
    assert "CSXA" not in card and "Cervical Spine X-ray Atlas" not in card
    metadata = json.loads((tmp_path / "package" / "figshare.json").read_text())
    assert "CSXA" not in metadata["description"] and "phantoms drawn" in metadata["description"]


#: What a user states of their own images in data.local (the card reads these keys only).
LOCAL_DATA = {
    "source": "local",
    "local": {
        "description": (
            "the Example Clinic's lateral cervical-spine radiographs of 2015-2020, de-identified"
        ),
        "licence": "CC BY 4.0",
        "citation": "Example Clinic. Lateral cervical-spine radiographs 2015-2020. 2026.",
    },
}


def test_dataset_card_of_local_data_states_what_the_user_stated(inputs, tmp_path):
    build(tmp_path / "package", inputs, data=LOCAL_DATA)
    paragraphs = card_paragraphs(tmp_path / "package")
    made = paragraphs[paragraphs.index("## How the images were made") + 1]
    assert made.startswith(
        "The model learnt from the 8 images of the Example Clinic's lateral cervical-spine "
        "radiographs of 2015-2020, de-identified. A denoising diffusion"
    )
    assert paragraphs[paragraphs.index("## Licence") + 1] == (
        "CC BY 4.0, the licence stated for the images the model learnt from by whoever "
        "configured this run (`data.local.licence`)."
    )
    assert paragraphs[paragraphs.index("## How to cite") + 2] == (
        "Credit the data the model learnt from: Example Clinic. Lateral cervical-spine "
        "radiographs 2015-2020. 2026."
    )
    card = "\n\n".join(paragraphs)
    assert "CSXA" not in card and "phantom" not in card
    metadata = json.loads((tmp_path / "package" / "figshare.json").read_text())
    assert metadata["license"] == 1
    assert (
        "\n\nThe model learnt from the 8 images of the Example Clinic's"
        in (metadata["description"])
    )


@pytest.mark.parametrize("key", ["description", "licence", "citation"])
def test_local_data_without_a_statement_is_not_packaged(inputs, tmp_path, key):
    data = {"source": "local", "local": dict(LOCAL_DATA["local"])}
    del data["local"][key]
    with pytest.raises(ConfigError, match=rf"^data\.local\.{key}: missing key$"):
        build(tmp_path / "package", inputs, data=data)
    assert not (tmp_path / "package").exists()


def test_every_data_source_has_an_origin_and_another_is_refused():
    # a source added to data.source without its origin must fail here, not publish a wrong card
    sources = set(DataSettings.model_fields["source"].annotation.__args__)
    assert set(DATA_ORIGINS) | {"local"} == sources
    with pytest.raises(ValueError, match=r"^data\.source 'dicom': radsynth knows no licence"):
        data_origin({"source": "dicom"})


def test_every_licence_a_release_can_carry_has_a_figshare_id():
    assert set(FIGSHARE_LICENCES) == set(get_args(ReleaseLicence))


def screened(decided_by: list[str], excluded: list[bool], conflict: list[bool]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "decided_by": decided_by,
            "final_decision": ["exclude" if out else "include" for out in excluded],
            "conflict": conflict,
        }
    )


def test_screening_sentence_when_nobody_reviewed():
    merged = screened(["automated screen"] * 4, [True, False, True, False], [False] * 4)
    assert screening_sentence(merged) == (
        "Nobody reviewed the images: the automated plausibility screen alone decided all 4. Of 4 "
        "generated images, 2 were excluded (0 by reviewers, 2 by the screen alone) and 2 are "
        "released."
    )


def test_screening_sentence_when_some_were_reviewed():
    merged = screened(
        ["ann", "automated screen", "ann;bob", "automated screen", "automated screen"],
        [True, True, True, False, False],
        [False, False, True, False, False],
    )
    assert screening_sentence(merged) == (
        "An automated plausibility screen proposed images for exclusion; people reviewed 2 of the "
        "5 generated images (2 reviewers) and the screen alone decided the other 3. Of 5 "
        "generated images, 3 were excluded (2 by reviewers, 1 of them because reviewers "
        "disagreed, 1 by the screen alone) and 2 are released."
    )


def test_screening_sentence_when_every_image_was_reviewed():
    merged = screened(["ann", "ann", "ann"], [False, True, False], [False] * 3)
    assert screening_sentence(merged) == (
        "An automated plausibility screen proposed images for exclusion; people reviewed all 3 "
        "generated images (1 reviewer) and none was decided by the screen alone. Of 3 generated "
        "images, 1 was excluded (1 by reviewers, 0 by the screen alone) and 2 are released."
    )


def test_privacy_gate_record(package, inputs):
    gate = json.loads((package / "privacy_gate.json").read_text())
    assert {
        key: gate[key]
        for key in (
            "passed",
            "n_checked",
            "n_real_images",
            "identical_matches",
            "atlas_file",
            "near_duplicate_patch_distance",
            "nearest_real_file",
            "nearest_real_encoder",
            "max_similarity",
            "max_similarity_image_id",
            "max_similarity_real_id",
        )
    } == {
        "passed": True,
        "n_checked": 9,
        "n_real_images": 8,
        "identical_matches": 0,
        "atlas_file": "atlas.h5",
        "near_duplicate_patch_distance": 0.05,
        "nearest_real_file": "nearest_real.csv",
        "nearest_real_encoder": "random-test",
        # kept image with the highest similarity in nearest_rows: large-ckpt004_000004 (index 10)
        "max_similarity": 0.6,
        "max_similarity_image_id": "large-ckpt004_000004",
        "max_similarity_real_id": "real002",
    }
    expected = min(
        (hand_patch_distance(left_facing(inputs, image), real), image)
        for image, real in zip(*nearest_of_kept(inputs))
    )
    assert gate["min_patch_distance"] == pytest.approx(expected[0], abs=1e-6)
    assert gate["min_patch_distance_image_id"] == expected[1]
    assert gate["min_patch_distance"] > 0.05


def nearest_of_kept(inputs: dict) -> tuple[list[str], list[np.ndarray]]:
    nearest = nearest_rows().set_index("image_id")
    with load_atlas(inputs["atlas_h5"]) as atlas:
        position = {name: i for i, name in enumerate(atlas.source_names)}
        reals = [
            np.asarray(atlas.images[position[nearest.loc[image, "nearest_real_id"]]])
            for image in KEPT
        ]
    return KEPT, reals


def hand_patch_distance(synthetic: np.ndarray, real: np.ndarray) -> float:
    """MediSyn's distance written out for 16 px images (4 x 4 patches of 4 x 4 pixels), smaller
    of the real image as stored and mirrored."""

    def one(a: np.ndarray) -> float:
        diff = (a.astype(float) - synthetic.astype(float)) / 255
        return max(
            np.sqrt(np.mean(diff[r : r + 4, c : c + 4] ** 2))
            for r in range(0, 16, 4)
            for c in range(0, 16, 4)
        )

    return min(one(real), one(real[:, ::-1]))


def test_rebuild_is_byte_identical(package, inputs, tmp_path):
    uploads = build(
        tmp_path / "again",
        inputs,
        provenance={**RUN_PROVENANCE, "created_utc": "2031-06-30T12:00:00+00:00"},
    )
    names = sorted(path.name for path in package.iterdir())
    assert uploads == [name for name in names if name != "checksums.md5"]
    assert sorted(path.name for path in (tmp_path / "again").iterdir()) == names
    for name in names:
        assert (tmp_path / "again" / name).read_bytes() == (package / name).read_bytes(), name


# ----------------------------------------------------------------------------- failures


def test_an_image_larger_than_the_limit_fails_and_writes_nothing(inputs, tmp_path):
    with pytest.raises(
        ValueError,
        match=r"images/large-ckpt002/large-ckpt002_000000\.png: .*release\.max_archive_"
        r"bytes 300",
    ):
        build(tmp_path / "package", inputs, settings={**SETTINGS, "max_archive_bytes": 300})
    assert list(tmp_path.iterdir()) == []


def test_stale_counts_fail_naming_the_file(inputs, tmp_path):
    write_table(
        pd.DataFrame(
            [
                ["large/ckpt002", 6, 0, 6, 0, 0],
                ["large/ckpt004", 6, 2, 4, 1, 1],
                ["total", 12, 2, 10, 1, 1],
            ],
            columns=[
                "checkpoint",
                "generated",
                "excluded",
                "kept",
                "excluded_by_reviewers",
                "excluded_by_screen",
            ],
        ),
        tmp_path / "counts.csv",
        provenance={},
    )
    with pytest.raises(ValueError, match=r"counts\.csv: row 1 is \['large/ckpt002', '6', '0', '6'"):
        build(tmp_path / "package", {**inputs, "counts_csv": tmp_path / "counts.csv"})
    assert not (tmp_path / "package").exists()


#: The anatomy stage's tables, written by hand for the fixture's released set `large` at steps
#: 100 and 200 (checkpoint interval 50); distractor rows: the FID set at step 100 and the students
#: on half the real images, which the card must not read. fidelity.csv's columns the card does not
#: read are blank.
ANATOMY_TABLES = {
    "landmark_summary": pd.DataFrame(
        [["landmark model", 4, 4, 0, 2.5, 0.25], ["mean shape", 4, 4, 0, 9.75, 0.96]],
        columns=[
            "predictor",
            "n_images",
            "n_images_with_spacing",
            "n_images_without_spacing",
            "mre_px",
            "mre_mm",
        ],
    ),
    "fidelity": pd.DataFrame(
        [
            ["large", 100, "c2_c7_angle_deg", 3.1, None],
            ["large", 100, "curvature_class", None, 0.41],
            ["large", 200, "c2_c7_angle_deg", 1.75, None],
            ["large", 200, "curvature_class", None, None],
            ["fid", 100, "c2_c7_angle_deg", 9.0, None],
            ["real vs real", None, "c2_c7_angle_deg", 1.2, None],
        ],
        columns=["set", "step", "measure", "w1", "chi2_p"],
    ).reindex(columns=list(FIDELITY_COLUMNS)),
    "two_sample": pd.DataFrame(
        [[250, 5, 0.51, 0.4, 0.6, 0.95, 8, 6, 4, 6], [50, 1, 0.62, 0.55, 0.7, 0.95, 8, 6, 4, 6]],
        columns=[
            "step",
            "checkpoint",
            "auroc",
            "auroc_low",
            "auroc_high",
            "level",
            "n_real_train",
            "n_synthetic_train",
            "n_real_test",
            "n_synthetic_test",
        ],
    ),
    "utility": pd.DataFrame(
        [
            ["real 100%", 1.0, False, 8, 0, 3, 4.0, 0.5, 0.4, 0.05],
            ["synthetic", 0.0, True, 0, 12, 3, 6.5, 1.25, 0.65, 0.125],
            ["real 100% + synthetic", 1.0, True, 8, 12, 3, 3.75, 0.25, 0.375, 0.025],
            ["real 50%", 0.5, False, 4, 0, 3, 7.0, 1.0, 0.7, 0.1],
        ],
        columns=[
            "arm",
            "real_fraction",
            "synthetic",
            "n_real",
            "n_synthetic",
            "seeds",
            "mre_px_mean",
            "mre_px_std",
            "mre_mm_mean",
            "mre_mm_std",
        ],
    ),
}
#: The card's paragraph of ANATOMY_TABLES, written by hand.
ANATOMY_PARAGRAPH = (
    "A landmark model trained on the atlas's own vertebral keypoints (the split's train images) "
    "finds them on the 4 held-out real images with a mean radial error (MRE) of 2.50 px "
    "(0.25 mm), against 9.75 px (0.96 mm) for the mean shape of the train images. The same model "
    "on each released checkpoint's images, against the held-out real images (Wasserstein-1 "
    "distance W1; two disjoint halves of the real atlas are 1.20 degrees apart in C2-C7 angle, "
    "the real-vs-real floor): large/ckpt002 (step 100): C2-C7 angle W1 3.10 degrees, "
    "curvature-class chi-square p 0.41, two-sample AUROC 0.62 (95% interval 0.55-0.70, FID "
    "checkpoint at step 50); large/ckpt004 (step 200): C2-C7 angle W1 1.75 degrees, two-sample "
    "AUROC 0.51 (95% interval 0.40-0.60, FID checkpoint at step 250). A two-sample AUROC of 0.5 "
    "means a classifier cannot tell the synthetic images from real ones. Students trained on "
    "synthetic images alone reach a held-out MRE of 6.50 +/- 1.25 px and on real plus synthetic "
    "images 3.75 +/- 0.25 px, against 4.00 +/- 0.50 px on the real images alone (mean +/- std "
    "over 3 seeds); the synthetic images' landmarks are the landmark model's predictions, so "
    "these results are bounded by that teacher (2.50 px)."
)


def write_anatomy_tables(folder: Path, tables: dict[str, pd.DataFrame]) -> AnatomyFiles:
    for name, table in tables.items():
        write_table(table, folder / f"{name}.csv", provenance=PROVENANCE)
    return AnatomyFiles(**{name: folder / f"{name}.csv" for name in tables})


def test_dataset_card_states_the_anatomy_stage_numbers(inputs, tmp_path):
    anatomy = write_anatomy_tables(tmp_path, ANATOMY_TABLES)
    build(tmp_path / "package", inputs, anatomy=anatomy)
    paragraphs = card_paragraphs(tmp_path / "package")
    assert paragraphs[paragraphs.index("## Anatomy") + 1] == ANATOMY_PARAGRAPH


def test_dataset_card_says_the_anatomy_stage_was_skipped_without_keypoints(package):
    paragraphs = card_paragraphs(package)
    assert paragraphs[paragraphs.index("## Anatomy") + 1] == (
        "The anatomy stage was skipped: the atlas has no keypoints (no inputs for a landmark "
        "model), so no landmark, anatomical-fidelity, two-sample or utility result is reported."
    )


def test_a_released_checkpoint_missing_from_the_fidelity_table_fails_naming_it(inputs, tmp_path):
    fidelity = ANATOMY_TABLES["fidelity"]
    anatomy = write_anatomy_tables(
        tmp_path, {**ANATOMY_TABLES, "fidelity": fidelity[fidelity["step"] != 200]}
    )
    with pytest.raises(
        ValueError, match=r"fidelity\.csv: expected one row of set 'large' at step 200, found 0"
    ):
        build(tmp_path / "package", inputs, anatomy=anatomy)
    assert not (tmp_path / "package").exists()


def test_an_anatomy_table_missing_a_column_fails_naming_the_file_and_column(inputs, tmp_path):
    utility = ANATOMY_TABLES["utility"].drop(columns="mre_px_std")
    anatomy = write_anatomy_tables(tmp_path, {**ANATOMY_TABLES, "utility": utility})
    with pytest.raises(ValueError, match=r"utility\.csv: missing column\(s\) \['mre_px_std'\]"):
        build(tmp_path / "package", inputs, anatomy=anatomy)
    assert not (tmp_path / "package").exists()


def with_atlas(
    inputs: dict, folder: Path, extra: np.ndarray, nearest: pd.DataFrame | None = None
) -> dict:
    """The inputs with `extra` planted in the atlas as real image 'planted', and optionally another
    nearest_real.csv (the memorization folder copied)."""
    real = np.random.default_rng(7).integers(0, 256, size=(N_REAL, 16, 16), dtype=np.uint8)
    names = [f"real{i:03d}" for i in range(N_REAL)] + ["planted"]
    write_atlas(folder / "atlas.h5", atlas_from_images(np.concatenate([real, extra[None]]), names))
    write_memorization(folder / "memorization", nearest_rows() if nearest is None else nearest)
    return {**inputs, "atlas_h5": folder / "atlas.h5", "memorization_dir": folder / "memorization"}


def test_clean_set_passes_with_a_planted_unrelated_image(inputs, tmp_path):
    planted = np.full((16, 16), 128, dtype=np.uint8)
    assert "images.csv" in build(tmp_path / "package", with_atlas(inputs, tmp_path, planted))


@pytest.mark.parametrize("orientation", ["as stored", "mirrored"])
def test_a_real_image_among_the_kept_fails_naming_both(inputs, tmp_path, orientation):
    image = left_facing(inputs, "large-ckpt004_000003")
    planted = image if orientation == "as stored" else image[:, ::-1]
    with pytest.raises(PrivacyGateError) as error:
        build(tmp_path / "package", with_atlas(inputs, tmp_path, planted))
    assert (
        f"images/large-ckpt004/large-ckpt004_000003.png (large-ckpt004_000003): "
        f"pixel-identical to real image planted {orientation}"
    ) in str(error.value)
    assert "1 problem(s) in 9 packaged images" in str(error.value)
    assert not (tmp_path / "package").exists()


def test_a_near_copy_fails_naming_both(inputs, tmp_path):
    image = left_facing(inputs, "large-ckpt002_000004")
    noise = np.random.default_rng(1).integers(-3, 4, size=image.shape)
    near = np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)
    assert not np.array_equal(near, image)
    nearest = nearest_rows()
    nearest.loc[nearest["image_id"] == "large-ckpt002_000004", "nearest_real_id"] = "planted"
    with pytest.raises(
        PrivacyGateError,
        match=r"images/large-ckpt002/large-ckpt002_000004\.png \(large-ckpt002_000004\): "
        r"patch distance 0\.0\d+ <= 0\.05 to real image planted as stored",
    ):
        build(tmp_path / "package", with_atlas(inputs, tmp_path, near, nearest))
    assert not (tmp_path / "package").exists()


def test_an_image_missing_from_nearest_real_fails_naming_it(inputs, tmp_path):
    nearest = nearest_rows()
    nearest = nearest[nearest["image_id"] != "large-ckpt004_000002"]
    with pytest.raises(
        PrivacyGateError,
        match=r"images/large-ckpt004/large-ckpt004_000002\.png "
        r"\(large-ckpt004_000002\): not in .*nearest_real\.csv",
    ):
        build(
            tmp_path / "package",
            with_atlas(inputs, tmp_path, np.zeros((16, 16), np.uint8), nearest),
        )


def test_an_empty_release_says_which_settings_let_images_through(tmp_path):
    merged = pd.DataFrame(
        {
            "image_id": ["a", "b", "c"],
            "final_decision": ["exclude"] * 3,
            "decided_by": ["automated screen", "automated screen", "rater1"],
        }
    )
    with pytest.raises(ValueError) as caught:
        kept_images(merged, tmp_path / "merged.csv")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'merged.csv'}: no image has final_decision 'include'")
    assert "(2 of 3 excluded by the screen alone, the others by reviewers)" in message
    assert "audit.screen.threshold" in message and "audit.reviews_folder" in message
