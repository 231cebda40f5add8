"""The anatomy stage's fidelity and two-sample jobs (radsynth.anatomy.fidelity_stage): set sizes and
draws, the tables from hand-made landmark tables, records and FID rows, the figures, and the
landmark-feature FD and two-sample AUROC on phantom images written as the pipeline writes them."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from anatomy_fixtures import PROVENANCE, demo_teacher, phantoms
from PIL import Image

from radsynth.anatomy.fidelity_stage import (
    SetLandmarks,
    floor_size,
    landmark_fd_record,
    read_atlas_landmark_features,
    synthetic_halves,
    two_sample_record,
    write_anatomy_fidelity,
    write_anatomy_figure,
    write_atlas_landmark_features,
    write_real_floor,
    write_two_sample_table,
)
from radsynth.anatomy.landmark_export import (
    landmark_columns,
    read_landmark_table,
    write_landmark_table,
)
from radsynth.anatomy.tables import FLOOR_SET, read_fd_table, read_fidelity_table
from radsynth.core.atomic import write_json_atomic
from radsynth.core.features import extract_features, offline_inception
from radsynth.core.settings.sample import Architecture
from radsynth.data.atlas import atlas_from_images, write_atlas
from radsynth.data.split import split_manifest
from radsynth.sample.facing import new_classifier, save_classifier
from radsynth.sample.store import STORE_FORMAT

ANGLE, CURVATURE = "c2_c7_angle_deg", "curvature_class"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- sizes and draws


def test_floor_halves_take_the_fid_set_size_capped_at_half_the_atlas() -> None:
    demo = floor_size(48, 180)
    assert (demo.half, demo.capped) == (48, False)
    assert demo.note(48, 180) == "halves of 48 images, the FID set size"
    paper = floor_size(7250, 4963)  # the paper preset's FID set against CSXA's 4,963 images
    assert (paper.half, paper.capped) == (2481, True)
    assert paper.note(7250, 4963).startswith(
        "capped: halves of 2481 images (half the atlas's 4963)"
    )
    with pytest.raises(ValueError, match="at least 2 images; the atlas has 3"):
        floor_size(48, 3)


def test_synthetic_halves_are_a_seeded_partition() -> None:
    train, test = synthetic_halves(9, seed=4)
    assert (len(train), len(test)) == (4, 5)
    assert sorted([*train, *test]) == list(range(9))
    assert np.array_equal(train, synthetic_halves(9, seed=4)[0])
    assert not np.array_equal(train, synthetic_halves(9, seed=5)[0])
    with pytest.raises(ValueError, match="at least 2 synthetic images, got 1"):
        synthetic_halves(1, seed=0)


# ---------------------------------------------------------------- tables, by hand


def landmarks_csv(path: Path, angles: list[float], height: float, classes: list[str]) -> Path:
    """A landmark table whose landmarks are 0 and whose geometry is given: every body height and
    depth `height`, the angles and classes per image."""
    columns = landmark_columns()
    table = pd.DataFrame(0.0, index=range(len(angles)), columns=columns)
    table["image_id"] = [f"{path.stem}{i}" for i in range(len(angles))]
    for column in columns[columns.index(ANGLE) :]:
        table[column] = height
    table[ANGLE] = angles
    table[CURVATURE] = classes
    write_landmark_table(table, path, provenance=PROVENANCE)
    return path


def fd_row(step: int, landmark_fd: float) -> dict:
    return {
        "set": "fid",
        "step": step,
        "checkpoint": step // 50,
        "n_reference": 180,
        "n_compared": 48,
        "reference": "every atlas image (180)",
        "landmark_fd": landmark_fd,
        "inception_fid": None,
        "landmark_extractor": "landmark-encoder",
        "landmark_weights": "ab" * 32,
        "warnings": "",
        "provenance": PROVENANCE,
    }


@pytest.fixture
def fidelity_inputs(tmp_path: Path) -> dict:
    """Held-out angles 0..3 (two lordotic, two straight), heights 5; the step-200 set one degree
    further (all lordotic) with heights 7; the floor's halves equal."""
    straight = ["lordotic", "lordotic", "straight", "straight"]
    floor = {
        "set": FLOOR_SET,
        "half_size": 48,
        "note": "halves of 48 images, the FID set size",
        "landmark_fd": 0.5,
        "inception_fid": 12.0,
        "landmark_extractor": "landmark-encoder",
        "landmark_weights": "ab" * 32,
        "warnings": "",
        "provenance": PROVENANCE,
    }
    write_json_atomic(tmp_path / "floor.json", floor)
    for step, value in ((400, 2.0), (200, 3.0)):
        write_json_atomic(tmp_path / f"fd{step}.json", fd_row(step, value))
    return {
        "held_out_csv": landmarks_csv(tmp_path / "held_out.csv", [0, 1, 2, 3], 5.0, straight),
        "sets": [
            SetLandmarks(
                "fid",
                200,
                landmarks_csv(tmp_path / "fid200.csv", [1, 2, 3, 4], 7.0, ["lordotic"] * 4),
            )
        ],
        "floor_json": tmp_path / "floor.json",
        "floor_halves": [
            landmarks_csv(tmp_path / f"half{h}.csv", [0, 1, 2, 3], 5.0, straight) for h in (1, 2)
        ],
        "fd_jsons": [tmp_path / "fd400.json", tmp_path / "fd200.json"],
        "fid_table": pd.DataFrame({"step": [200, 400], "fid": [30.0, 20.0]}),
        "out_fidelity_csv": tmp_path / "fidelity.csv",
        "out_fd_csv": tmp_path / "landmark_fd.csv",
    }


def test_fidelity_and_fd_tables_from_hand_made_inputs(fidelity_inputs: dict) -> None:
    """W1 of angles 0..3 against 1..4 is 1 deg; heights 5 against 7 give W1 = 2 with every
    resample (interval [2, 2]); counts [[2 lordotic, 2 straight], [4, 0]] give, with Yates'
    correction, chi2 = 0.25/3 + 0.25/1 + 0.25/3 + 0.25/1 = 2/3; equal halves have W1 = 0."""
    write_anatomy_fidelity(**fidelity_inputs, n_boot=50, level=0.9, seed=0, provenance=PROVENANCE)
    table = read_fidelity_table(fidelity_inputs["out_fidelity_csv"])
    synthetic = table[table["set"] == "fid"].set_index("measure")
    assert synthetic["step"].unique().tolist() == [200]
    assert synthetic.loc[ANGLE, "w1"] == pytest.approx(1.0)
    assert synthetic.loc["c4_height", ["w1", "w1_low", "w1_high"]].tolist() == [2.0, 2.0, 2.0]
    assert synthetic.loc[CURVATURE, "chi2"] == pytest.approx(2 / 3)
    assert synthetic.loc[CURVATURE, "share_lordotic_reference"] == 0.5
    assert synthetic.loc[CURVATURE, "share_lordotic_compared"] == 1.0
    floor = table[table["set"] == FLOOR_SET].set_index("measure")
    assert floor["step"].isna().all()
    assert floor.loc[ANGLE, "w1"] == 0.0 and floor.loc["c7_depth", "w1"] == 0.0
    assert (floor["n_reference"] == 4).all()

    fd = read_fd_table(fidelity_inputs["out_fd_csv"])
    assert fd["set"].tolist() == ["fid", "fid", FLOOR_SET]
    assert fd["step"].tolist()[:2] == [200, 400] and pd.isna(fd["step"].iloc[2])
    assert fd["inception_fid"].tolist() == [30.0, 20.0, 12.0]
    assert fd["landmark_fd"].tolist() == [3.0, 2.0, 0.5]
    assert "halves of 48 images" in fd["reference"].iloc[2]


def test_fd_table_refuses_a_checkpoint_without_an_fid_row(fidelity_inputs: dict) -> None:
    fid_table = pd.DataFrame({"step": [200], "fid": [30.0]})
    fid_table.attrs["source"] = "results/evaluate/fid.csv"
    with pytest.raises(
        ValueError, match=r"results/evaluate/fid.csv: no FID row for step\(s\) \[400\]"
    ):
        write_anatomy_fidelity(
            **{**fidelity_inputs, "fid_table": fid_table},
            n_boot=5,
            level=0.9,
            seed=0,
            provenance=PROVENANCE,
        )


def test_fidelity_reader_names_the_bad_cell(fidelity_inputs: dict) -> None:
    write_anatomy_fidelity(**fidelity_inputs, n_boot=5, level=0.9, seed=0, provenance=PROVENANCE)
    path = fidelity_inputs["out_fidelity_csv"]
    lines = path.read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("set,"))
    cells = lines[header + 1].split(",")
    cells[5] = "abc"  # w1 of the first row
    lines[header + 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"line {header + 2}, column 'w1': 'abc'"):
        read_fidelity_table(path)


def test_anatomy_figure_and_its_measures(fidelity_inputs: dict, tmp_path: Path) -> None:
    write_anatomy_fidelity(**fidelity_inputs, n_boot=5, level=0.9, seed=0, provenance=PROVENANCE)
    args = (fidelity_inputs["out_fidelity_csv"], fidelity_inputs["out_fd_csv"])
    out = write_anatomy_figure(
        *args, tmp_path / "figure.png", measures=[ANGLE, "c4_height"], provenance=PROVENANCE
    )
    with Image.open(out) as image:
        assert image.text["provenance_config_hash"] == "abc"
        assert image.width > 2.5 * image.height  # two measure panels and the FID panel in a row
    with pytest.raises(ValueError, match=r"no rows for measure\(s\) \['c9_height'\]"):
        write_anatomy_figure(
            *args, tmp_path / "bad.png", measures=["c9_height"], provenance=PROVENANCE
        )


def test_two_sample_table_in_step_order_with_its_figure(tmp_path: Path) -> None:
    rows = []
    for step, auroc in ((400, 0.6), (200, 0.9)):
        row = {
            "step": step,
            "checkpoint": step // 50,
            "auroc": auroc,
            "auroc_low": auroc - 0.1,
            "auroc_high": min(auroc + 0.1, 1.0),
            "level": 0.95,
            "n_real_train": 150,
            "n_synthetic_train": 24,
            "n_real_test": 27,
            "n_synthetic_test": 24,
            "provenance": PROVENANCE,
        }
        write_json_atomic(tmp_path / f"{step}.json", row)
        rows.append(tmp_path / f"{step}.json")
    table = write_two_sample_table(
        rows, tmp_path / "two_sample.csv", tmp_path / "two_sample.png", provenance=PROVENANCE
    )
    assert table["step"].tolist() == [200, 400]
    assert table["auroc"].tolist() == [0.9, 0.6]
    assert (tmp_path / "two_sample.png").is_file()
    write_json_atomic(tmp_path / "nan.json", {**row, "auroc": float("nan")})
    with pytest.raises(ValueError, match="no finite AUROC"):
        write_two_sample_table(
            [tmp_path / "nan.json"], tmp_path / "t.csv", tmp_path / "t.png", provenance=PROVENANCE
        )


# ---------------------------------------------------------------- on phantom images


def write_sample_store(path: Path, images: np.ndarray) -> Path:
    """A complete one-shard sample store holding `images` (the layout radsynth.sample writes)."""
    group = zarr.open_group(path, mode="w", zarr_format=3)
    n, size = len(images), images.shape[1]
    for name, data in (
        ("images", images),
        ("seed", np.arange(n, dtype=np.int64)),
        ("global_index", np.arange(n, dtype=np.int64)),
    ):
        array = group.create_array(name, shape=data.shape, dtype=data.dtype)
        array[:] = data
    group.attrs.update(
        {
            "format": STORE_FORMAT,
            "complete": True,
            "image_size": size,
            "shard_index": 0,
            "first_global_index": 0,
            "n_images": n,
            "batch_size": n,
        }
    )
    return path


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_teacher(tmp_path_factory.getbasetemp())[0]


def test_landmark_fd_of_a_set_against_itself_is_zero(teacher: Path, tmp_path: Path) -> None:
    """A FID set holding the atlas's own images scores FD 0; the same images inverted score far
    above it; the record names the model file by its sha256 and warns of the singular
    covariance (60 images < 448 features)."""
    images = phantoms(300, 60)["images"]
    write_atlas(tmp_path / "atlas.h5", atlas_from_images(images, [f"r{i}" for i in range(60)]))
    features = tmp_path / "features.npz"
    write_atlas_landmark_features(teacher, tmp_path / "atlas.h5", features, batch_size=32)
    same = write_sample_store(tmp_path / "same.zarr", images)
    inverted = write_sample_store(tmp_path / "inverted.zarr", 255 - images)
    record = landmark_fd_record(teacher, [same], features, step=200, checkpoint=4, batch_size=16)
    far = landmark_fd_record(teacher, [inverted], features, step=200, checkpoint=4, batch_size=16)
    print(f"\nlandmark FD: itself {record['landmark_fd']:.2e}, inverted {far['landmark_fd']:.2f}")
    assert record["landmark_fd"] == pytest.approx(0.0, abs=1e-3)
    assert far["landmark_fd"] > 1.0
    assert (record["n_reference"], record["n_compared"], record["step"]) == (60, 60, 200)
    assert record["landmark_weights"] == hashlib.sha256(teacher.read_bytes()).hexdigest()
    assert "60 images < 448 feature dimensions" in record["warnings"]
    with pytest.raises(ValueError, match="features of the model with sha256 .* rerun the job"):
        read_atlas_landmark_features(features, tmp_path / "atlas.h5")


def test_two_sample_record_on_the_split(tmp_path: Path) -> None:
    """Real phantoms against inverted ones: the classifier tells them apart on unseen images
    (AUROC near 1); it trains on the manifest's train rows and half the set, and tests on the
    val rows and the other half."""
    images = phantoms(400, 60)["images"]
    names = [f"r{i}" for i in range(60)]
    write_atlas(tmp_path / "atlas.h5", atlas_from_images(images, names))
    manifest = split_manifest(names, val_fraction=0.3, seed=0)
    manifest.to_csv(tmp_path / "split.csv", index=False)
    n_val = int((manifest["subset"] == "val").sum())
    store = write_sample_store(tmp_path / "fid.zarr", 255 - phantoms(500, 25)["images"])
    settings = dict(
        steps=20, batch_size=16, learning_rate=1e-3, seed=0, trunk_levels=2, n_boot=50, level=0.9
    )
    record = two_sample_record(
        tmp_path / "atlas.h5",
        tmp_path / "split.csv",
        [store],
        step=400,
        checkpoint=8,
        settings=settings,
        inference_batch_size=16,
    )
    assert record["auroc"] > 0.95 and record["auroc_low"] <= record["auroc"] <= record["auroc_high"]
    assert (record["n_real_train"], record["n_real_test"]) == (60 - n_val, n_val)
    assert (record["n_synthetic_train"], record["n_synthetic_test"]) == (12, 13)
    assert (record["step"], record["checkpoint"], record["level"]) == (400, 8, 0.9)


def test_real_floor_caps_its_halves_and_writes_their_landmarks(
    teacher: Path, tmp_path: Path
) -> None:
    """An atlas of 9 images and a FID set size of 48: two disjoint halves of 4 (capped, and said
    so), each with its landmark table; Inception FID and landmark FD of the halves recorded, with
    the warning that 4 images cannot give a full covariance."""
    images = phantoms(600, 9)["images"]
    names = [f"r{i}" for i in range(9)]
    write_atlas(tmp_path / "atlas.h5", atlas_from_images(images, names))
    features = tmp_path / "features.npz"
    write_atlas_landmark_features(teacher, tmp_path / "atlas.h5", features, batch_size=16)
    save_classifier(
        new_classifier(Architecture(channels=(4, 8), analysis_size=16), image_size=32, seed=3),
        tmp_path / "facing.safetensors",
    )
    extractor = offline_inception()
    inception = extract_features(extractor, images, batch_size=9, device="cpu")
    halves = [tmp_path / "half1.csv", tmp_path / "half2.csv"]
    floor = functools.partial(
        write_real_floor,
        teacher,
        tmp_path / "facing.safetensors",
        tmp_path / "atlas.h5",
        features,
        tmp_path / "floor.json",
        halves,
        set_size=48,
        seed=0,
        inception_extractor=extractor.description.as_dict(),
        curvature_thresholds_deg=(-6.1, 6.4),
        batch_size=16,
        provenance=PROVENANCE,
    )
    record = floor(inception_features=inception)
    assert (record["half_size"], record["capped"], record["n_atlas"]) == (4, True, 9)
    assert record["note"].startswith("capped: halves of 4 images (half the atlas's 9)")
    ids = [read_landmark_table(path)["image_id"].tolist() for path in halves]
    assert len(ids[0]) == len(ids[1]) == 4 and not set(ids[0]) & set(ids[1])
    assert set(ids[0]) | set(ids[1]) <= set(names)
    assert record["inception_fid"] > 0 and record["landmark_fd"] > 0
    assert record["inception_extractor"]["num_features"] == 2048
    assert "4 images < 2048 feature dimensions" in record["warnings"]
    with pytest.raises(ValueError, match="8 Inception feature rows for the 9 images"):
        floor(inception_features=inception[:8])
