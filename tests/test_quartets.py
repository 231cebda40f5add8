"""Quartet builder: draw counts, one image per group, blinding, determinism, eligibility, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from radsynth.turing.quartets import build_quartets, key_path, plan_quartets, read_layout

CHECKPOINTS = ("ckpt034", "ckpt040", "ckpt080")
PROVENANCE = {"config_hash": "abc123", "code_revision": "deadbeef"}


def constant_image(value: int) -> np.ndarray:
    """Every pixel equals `value`, so an exported PNG identifies its source."""
    return np.full((8, 6), value, dtype=np.uint8)


def make_pools(n_real: int = 7, n_synthetic: int = 6) -> tuple[dict, dict, dict[str, int]]:
    """Pools whose images all carry distinct pixel values; also returns id -> value."""
    values: dict[str, int] = {}
    real = {}
    for i in range(n_real):
        values[f"00{i:02d}045"] = len(values)
        real[f"00{i:02d}045"] = constant_image(values[f"00{i:02d}045"])
    synthetic = {}
    for label in CHECKPOINTS:
        synthetic[label] = {}
        for i in range(n_synthetic):
            values[f"{label}_s{i:03d}"] = len(values)
            synthetic[label][f"{label}_s{i:03d}"] = constant_image(values[f"{label}_s{i:03d}"])
    return real, synthetic, values


def build(tmp_path: Path, name: str = "turing", **overrides) -> tuple[pd.DataFrame, Path]:
    real, synthetic, _ = make_pools()
    arguments = {
        "n_quartets": 5,
        "seed": 11,
        "provenance": PROVENANCE,
        "progress": False,
        **overrides,
    }
    out_dir = tmp_path / name
    return build_quartets(real, synthetic, out_dir, **arguments), out_dir


def test_every_quartet_holds_one_image_per_group_at_positions_one_to_four(tmp_path):
    plan, out_dir = build(tmp_path)
    key = pd.read_csv(out_dir / "key" / "key.csv")
    assert list(key.columns) == ["quartet", "position", "group", "image"]
    assert len(key) == 20
    for quartet, rows in key.groupby("quartet"):
        assert sorted(rows["group"]) == ["ckpt034", "ckpt040", "ckpt080", "real"], quartet
        assert sorted(rows["position"]) == [1, 2, 3, 4], quartet
    assert sorted(key["quartet"].unique()) == [1, 2, 3, 4, 5]
    assert plan["source_id"].is_unique
    assert plan.groupby("group").size().to_dict() == {
        "ckpt034": 5,
        "ckpt040": 5,
        "ckpt080": 5,
        "real": 5,
    }
    pd.testing.assert_frame_equal(plan.drop(columns="source_id"), key)


#: Quartets in the shuffle test: enough that every group meets every position hundreds of times.
N_SHUFFLED = 2400


def test_positions_are_a_uniform_shuffle_of_every_quartet():
    """Each quartet's order of the 4 groups is one of the 4! = 24 orders, each with probability
    1/24, independently of the quartet: so each group sits at each position with probability 1/4.

    Over N = 2400 quartets a (group, position) count is Binomial(2400, 1/4): mean 600, standard
    deviation sqrt(2400 * 1/4 * 3/4) = 21.2; an order's count is Binomial(2400, 1/24): mean 100,
    standard deviation sqrt(2400 * 1/24 * 23/24) = 9.8. The bounds are 5 standard deviations,
    which a uniform shuffle leaves with probability below 1e-5 over all 40 counts (and the seed
    is fixed). Sattolo's off-by-one (`rng.integers(0, i)`) never leaves a group at its own
    position and draws 6 orders only; a rotation by quartet gives every count of 600 but 4
    orders only.
    """
    pools = {
        group: [f"{group}_{i:04d}" for i in range(N_SHUFFLED)] for group in ("real", *CHECKPOINTS)
    }
    plan = plan_quartets(pools, n_quartets=N_SHUFFLED, seed=5)
    counts = pd.crosstab(plan["group"], plan["position"])
    assert counts.shape == (4, 4)
    assert counts.to_numpy().sum() == 4 * N_SHUFFLED
    assert counts.to_numpy().min() >= 600 - 106 and counts.to_numpy().max() <= 600 + 106, counts
    orders = plan.sort_values(["quartet", "position"]).groupby("quartet")["group"].agg(tuple)
    order_counts = orders.value_counts()
    assert len(order_counts) == 24, order_counts
    assert order_counts.min() >= 100 - 49 and order_counts.max() <= 100 + 49, order_counts


def test_exported_pixels_match_the_source_named_in_sources_csv(tmp_path):
    _, out_dir = build(tmp_path)
    _, _, values = make_pools()
    sources = pd.read_csv(out_dir / "key" / "sources.csv", dtype=str)
    assert list(sources.columns) == ["image", "group", "source_id"]
    assert len(sources) == 20
    for row in sources.itertuples():
        pixels = np.asarray(Image.open(out_dir / "images" / row.image))
        assert pixels.shape == (8, 6) and pixels.dtype == np.uint8
        assert np.all(pixels == values[row.source_id]), row.image
        expected_group = "real" if row.source_id.endswith("045") else row.source_id.split("_")[0]
        assert row.group == expected_group


def test_image_names_and_images_folder_are_group_blind(tmp_path):
    plan, out_dir = build(tmp_path)
    images_dir = out_dir / "images"
    names = sorted(p.name for p in images_dir.iterdir())
    assert names == sorted([*plan["image"], "layout.csv"])
    for name in plan["image"]:
        assert re.fullmatch(r"q\d{2}_[0-9a-f]{8}\.png", name), name
    layout_text = (images_dir / "layout.csv").read_text()
    assert layout_text.splitlines()[0] == "quartet,position,image"
    for secret in [*CHECKPOINTS, "real", "ckpt", *plan["source_id"]]:
        assert secret not in layout_text
        assert not any(secret in name for name in names if name.endswith(".png"))
    for png in images_dir.glob("*.png"):
        assert Image.open(png).info == {}, png.name


def test_key_sources_and_provenance_live_apart_from_images(tmp_path):
    _, out_dir = build(tmp_path)
    assert sorted(p.name for p in out_dir.iterdir()) == ["images", "key"]
    assert sorted(p.name for p in (out_dir / "key").iterdir()) == [
        "key.csv",
        "provenance.json",
        "sources.csv",
    ]
    sidecar = json.loads((out_dir / "key" / "provenance.json").read_text())
    assert sidecar == {**PROVENANCE, "n_quartets": 5, "seed": 11, "groups": ["real", *CHECKPOINTS]}
    assert not list(tmp_path.glob(".*partial"))


def test_layout_matches_key_without_groups(tmp_path):
    _, out_dir = build(tmp_path)
    key = pd.read_csv(out_dir / "key" / "key.csv")
    pd.testing.assert_frame_equal(read_layout(out_dir / "images"), key.drop(columns="group"))


def test_same_seed_gives_identical_files_whatever_the_key_order(tmp_path):
    _, first = build(tmp_path, "first")
    real, synthetic, _ = make_pools()
    reversed_real = dict(reversed(list(real.items())))
    reversed_synthetic = {
        label: dict(reversed(list(synthetic[label].items()))) for label in reversed(CHECKPOINTS)
    }
    second = tmp_path / "second"
    build_quartets(
        reversed_real,
        reversed_synthetic,
        second,
        n_quartets=5,
        seed=11,
        provenance=PROVENANCE,
        progress=False,
    )
    for relative in ["key/key.csv", "key/sources.csv", "images/layout.csv"]:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative
    for png in (first / "images").glob("*.png"):
        assert png.read_bytes() == (second / "images" / png.name).read_bytes()


def test_another_seed_gives_another_design(tmp_path):
    first, _ = build(tmp_path, "first", seed=11)
    second, _ = build(tmp_path, "second", seed=12)
    assert not first.equals(second)


def test_eligible_restricts_the_draw(tmp_path):
    kept = ["ckpt040_s001", "ckpt040_s003", "ckpt040_s004"]
    plan, _ = build(tmp_path, n_quartets=3, eligible={"ckpt040": kept})
    assert sorted(plan.loc[plan["group"] == "ckpt040", "source_id"]) == kept
    assert plan.groupby("group").size().to_dict() == {
        "ckpt034": 3,
        "ckpt040": 3,
        "ckpt080": 3,
        "real": 3,
    }


def test_eligible_id_outside_the_pool_is_named(tmp_path):
    with pytest.raises(
        ValueError, match=r"\['ckpt040_s999'\] of group 'ckpt040' are not in its image pool"
    ):
        build(tmp_path, eligible={"ckpt040": ["ckpt040_s001", "ckpt040_s999"]})
    assert not (tmp_path / "turing").exists()


def test_eligible_for_an_unknown_group_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"unknown group\(s\) \['ckpt099'\]"):
        build(tmp_path, eligible={"ckpt099": []})


def test_pool_too_small_names_the_group(tmp_path):
    with pytest.raises(
        ValueError, match=r"group 'ckpt080' has 2 eligible image\(s\); 3 quartets need 3"
    ):
        build(tmp_path, n_quartets=3, eligible={"ckpt080": ["ckpt080_s000", "ckpt080_s001"]})
    with pytest.raises(
        ValueError, match=r"group 'real' has 7 eligible image\(s\); 8 quartets need 8"
    ):
        build(tmp_path, n_quartets=8)


def test_bad_image_is_named_and_leaves_nothing_behind(tmp_path):
    real, synthetic, _ = make_pools()
    synthetic["ckpt034"] = {
        key: image.astype(np.float32) for key, image in synthetic["ckpt034"].items()
    }
    with pytest.raises(
        ValueError, match=r"image 'ckpt034_s\d{3}' of group 'ckpt034' is float32 \(8, 6\)"
    ):
        build_quartets(
            real,
            synthetic,
            tmp_path / "turing",
            n_quartets=2,
            seed=1,
            provenance={},
            progress=False,
        )
    assert list(tmp_path.iterdir()) == []


def test_mismatched_shapes_are_refused(tmp_path):
    real, synthetic, _ = make_pools()
    synthetic["ckpt080"] = {key: np.zeros((8, 7), np.uint8) for key in synthetic["ckpt080"]}
    with pytest.raises(
        ValueError, match=r"of group 'ckpt080' has shape \(8, 7\), the real images \(8, 6\)"
    ):
        build_quartets(
            real,
            synthetic,
            tmp_path / "turing",
            n_quartets=2,
            seed=1,
            provenance={},
            progress=False,
        )


def test_existing_study_is_never_overwritten(tmp_path):
    _, out_dir = build(tmp_path)
    before = (out_dir / "key" / "key.csv").read_bytes()
    with pytest.raises(FileExistsError, match="turing already holds files"):
        build(tmp_path, seed=99)
    assert (out_dir / "key" / "key.csv").read_bytes() == before


def test_real_is_a_reserved_checkpoint_label(tmp_path):
    real, synthetic, _ = make_pools()
    with pytest.raises(ValueError, match="'real' is reserved"):
        build_quartets(
            real,
            {"real": synthetic["ckpt034"]},
            tmp_path / "t",
            n_quartets=1,
            seed=1,
            provenance={},
        )


def test_a_study_needs_a_synthetic_group(tmp_path):
    real, _, _ = make_pools()
    with pytest.raises(ValueError, match="synthetic holds no checkpoint"):
        build_quartets(real, {}, tmp_path / "t", n_quartets=1, seed=1, provenance={})


def test_layout_with_a_missing_position_is_refused(tmp_path):
    _, out_dir = build(tmp_path)
    layout_csv = out_dir / "images" / "layout.csv"
    layout = pd.read_csv(layout_csv)
    layout.drop(index=2).to_csv(layout_csv, index=False)
    with pytest.raises(
        ValueError, match=r"layout.csv: quartet 1 has positions \[1, 2, 4\], expected 1..4"
    ):
        read_layout(out_dir / "images")


def test_a_single_quartet_is_a_study(tmp_path):
    plan, out_dir = build(tmp_path, n_quartets=1)
    assert sorted(plan["group"]) == ["ckpt034", "ckpt040", "ckpt080", "real"]
    assert sorted(plan["position"]) == [1, 2, 3, 4]
    assert len(list((out_dir / "images").glob("*.png"))) == 4


def test_no_quartet_is_an_error_naming_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"^turing\.n_quartets must be at least 1, got 0$"):
        build(tmp_path, n_quartets=0)


def test_the_synthetic_group_error_is_the_whole_message(tmp_path):
    real, _, _ = make_pools()
    with pytest.raises(
        ValueError,
        match=r"^synthetic holds no checkpoint: a quartet needs at least one synthetic group$",
    ):
        build_quartets(real, {}, tmp_path / "t", n_quartets=1, seed=1, provenance={})


def test_eligible_ids_outside_the_pool_are_named_five_at_most(tmp_path):
    outside = [f"ckpt040_s9{i:02d}" for i in range(6)]
    with pytest.raises(ValueError, match=re.escape(f"eligible id(s) {outside[:5]} of group")):
        build(tmp_path, eligible={"ckpt040": outside})


def test_a_bad_first_real_image_is_named(tmp_path):
    real, synthetic, _ = make_pools()
    real = {key: image.astype(np.float32) for key, image in real.items()}
    with pytest.raises(
        ValueError, match=r"^image '00\d{2}045' of group 'real' is float32 \(8, 6\), expected"
    ):
        build_quartets(
            real, synthetic, tmp_path / "t", n_quartets=2, seed=1, provenance={}, progress=False
        )


def test_progress_bar_counts_the_images_unless_turned_off(tmp_path, capsys):
    real, synthetic, _ = make_pools()
    build_quartets(real, synthetic, tmp_path / "shown", n_quartets=5, seed=1, provenance={})
    shown = capsys.readouterr().err
    assert "quartet images: 100%" in shown and "20/20" in shown, shown
    build_quartets(
        real, synthetic, tmp_path / "hidden", n_quartets=5, seed=1, provenance={}, progress=False
    )
    assert capsys.readouterr().err == ""


def test_provenance_json_is_indented_with_sorted_keys(tmp_path):
    _, out_dir = build(tmp_path)
    assert (out_dir / "key" / "provenance.json").read_text() == (
        "{\n"
        '  "code_revision": "deadbeef",\n'
        '  "config_hash": "abc123",\n'
        '  "groups": [\n'
        '    "real",\n'
        '    "ckpt034",\n'
        '    "ckpt040",\n'
        '    "ckpt080"\n'
        "  ],\n"
        '  "n_quartets": 5,\n'
        '  "seed": 11\n'
        "}\n"
    )


def test_key_path_is_the_key_csv_of_a_study(tmp_path):
    _, out_dir = build(tmp_path)
    assert key_path(out_dir) == out_dir / "key" / "key.csv"
    assert key_path(str(out_dir)).is_file()


def test_layout_rows_in_any_order_are_read_sorted_with_a_fresh_index(tmp_path):
    _, out_dir = build(tmp_path)
    layout_csv = out_dir / "images" / "layout.csv"
    in_order = pd.read_csv(layout_csv)
    in_order.iloc[::-1].to_csv(layout_csv, index=False)
    pd.testing.assert_frame_equal(read_layout(out_dir / "images"), in_order)


def test_layout_image_names_are_read_as_text(tmp_path):
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    for name in ("0007", "0100"):
        (images_dir / name).write_bytes(b"")
    (images_dir / "layout.csv").write_text("quartet,position,image\n1,1,0007\n1,2,0100\n")
    assert list(read_layout(images_dir)["image"]) == ["0007", "0100"]


def test_layout_without_its_columns_is_refused_naming_them(tmp_path):
    _, out_dir = build(tmp_path)
    layout_csv = out_dir / "images" / "layout.csv"
    pd.read_csv(layout_csv).loc[:, ["quartet"]].to_csv(layout_csv, index=False)
    with pytest.raises(ValueError, match=r"layout.csv: layout lacks column\(s\) position, image$"):
        read_layout(out_dir / "images")


def test_layout_with_a_gap_in_the_quartet_numbers_is_refused(tmp_path):
    _, out_dir = build(tmp_path)
    layout_csv = out_dir / "images" / "layout.csv"
    layout = pd.read_csv(layout_csv)
    layout.loc[layout["quartet"] == 5, "quartet"] = 6
    layout.to_csv(layout_csv, index=False)
    with pytest.raises(ValueError, match=r"layout.csv: quartets are not numbered 1\.\.5$"):
        read_layout(out_dir / "images")


def test_layout_images_missing_from_the_folder_are_named_five_at_most(tmp_path):
    _, out_dir = build(tmp_path)
    names = list(pd.read_csv(out_dir / "images" / "layout.csv")["image"])
    for name in names[:6]:
        (out_dir / "images" / name).unlink()
    with pytest.raises(
        FileNotFoundError,
        match=re.escape(f"layout.csv: image(s) {names[:5]} listed in the layout are missing"),
    ):
        read_layout(out_dir / "images")
