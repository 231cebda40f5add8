"""Offline review pages (radsynth.audit.review): offline pages, their sprite sheets and exports,
the landmark overlay, the merge of memorization verdicts, and reviewers end to end in headless
Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS
from PIL import Image

from radsynth.anatomy.landmark_export import label_column
from radsynth.audit.pair_verdicts import (
    DISAGREEMENT,
    UNREVIEWED,
    VERDICT_RECORD_COLUMNS,
    merge_pair_verdicts,
)
from radsynth.audit.review import (
    render_page,
    sprite_sheet,
    write_pairs_review,
    write_screening_review,
)
from radsynth.audit.reviewer_files import read_reviewer_file
from radsynth.audit.screening import (
    AUTOMATED,
    MANIFEST_COLUMNS,
    REVIEWED_MANIFEST,
    merge_reviews,
)
from radsynth.core.tables import read_table, write_table
from radsynth.data.csxa import KEYPOINT_LABELS

PROVENANCE = {"config_hash": "f00d", "code_revision": "cafe-dirty"}
REASONS = ("C2 below C4", "pharynx posterior to the spine, or in front", "other")
CHECKPOINT = "initial/ckpt004"
SIDE = 32
#: The paper's large set per checkpoint, and the pages the scale test opens.
LARGE_SET, LARGE_SIDE, LARGE_PAGE_SIZE, FAR_PAGE = 9_000, 64, 48, 50
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (Debian package chromium)"
)


# ----------------------------------------------------------------------------- inputs


def manifest_frame(n: int, seed: int = 1) -> pd.DataFrame:
    """A screening manifest as the screen writes it: random plausibility, blank review columns."""
    rng = np.random.default_rng(seed)
    plausibility = rng.random(n).round(6)
    return pd.DataFrame(
        {
            "row": np.arange(1, n + 1),
            "image_id": [f"initial-ckpt004_{i:06d}" for i in range(n)],
            "checkpoint": CHECKPOINT,
            "shard": "shard0.zarr",
            "index": np.arange(n),
            "seed": np.arange(n) + 1000,
            "flipped": rng.random(n) < 0.5,
            "plausibility": plausibility,
            "atypical_x": 0.5,
            "atypical_y": 0.25,
            "nearest_real_id": "real000",
            "nearest_real_similarity": 0.912345,
            "mean": 101.5,
            "std": 40.0,
            "p01": 3.0,
            "p99": 250.0,
            "proposed": np.where(plausibility < 0.2, "exclude", "include"),
            "decision": "",
            "reason": "",
            "reviewer": "",
        }
    ).loc[:, list(MANIFEST_COLUMNS)]


def structured_images(n: int, side: int, seed: int = 2) -> np.ndarray:
    """Gradients of per-image slopes plus a little noise (compressible like radiographs, unlike
    pure noise), each image's index stamped into its first two pixels."""
    y, x = np.mgrid[:side, :side].astype(np.uint16)
    k = np.arange(n, dtype=np.uint16)[:, None, None]
    images = ((x * (1 + k % 7) + y * (1 + k % 5) + k) % 248).astype(np.uint8)
    images += np.random.default_rng(seed).integers(0, 8, images.shape, dtype=np.uint8)
    images[:, 0, 0], images[:, 0, 1] = np.arange(n) // 256, np.arange(n) % 256
    return images


def screening_inputs(
    tmp_path: Path, n: int, side: int = SIDE
) -> tuple[Path, pd.DataFrame, np.ndarray]:
    manifest = manifest_frame(n)
    path = tmp_path / "screening_manifest.csv"
    write_table(manifest, path, provenance={"plausibility": "radsynth screen", "threshold": "0.2"})
    return path, manifest, structured_images(n, side)


def write_review(
    tmp_path: Path, n: int = 30, page_size: int = 12, **kwargs
) -> tuple[Path, pd.DataFrame, np.ndarray, dict]:
    manifest_csv, manifest, images = screening_inputs(tmp_path, n)
    out = tmp_path / "review.html"
    info = write_screening_review(
        manifest_csv,
        images,
        out,
        reasons=REASONS,
        page_size=page_size,
        title="Screening <initial/ckpt004>",
        provenance=PROVENANCE,
        **kwargs,
    )
    return out, manifest, images, info


def embedded(page_html: str) -> dict:
    return json.loads(
        re.search(
            r'<script type="application/json" id="review-data">(.*?)</script>', page_html, re.S
        )[1]
    )


def sheets(page: Path) -> list[np.ndarray]:
    """The page's sprite sheets, read from the files its data names, relative to the page."""
    names = embedded(page.read_text(encoding="utf-8"))["sheets"]
    assert names == [f"{page.stem}_sheets/page-{n:04d}.png" for n in range(1, len(names) + 1)]
    assert sorted(path.name for path in (page.parent / f"{page.stem}_sheets").iterdir()) == [
        name.split("/")[1] for name in names
    ]
    return [np.asarray(Image.open(page.parent / name)) for name in names]


def landmark_frame(image_ids: list[str]) -> pd.DataFrame:
    """`radsynth landmarks`' columns for `image_ids`: landmark k of the i-th image at x = k + i,
    y = 2 + k (inside SIDE), confidence k / 22 to two decimals."""
    columns: dict[str, list] = {"image_id": image_ids}
    for k, label in enumerate(KEYPOINT_LABELS):
        columns[label_column(label, "x")] = [float(k + i) for i in range(len(image_ids))]
        columns[label_column(label, "y")] = [2.0 + k] * len(image_ids)
        columns[label_column(label, "confidence")] = [round(k / 22, 2)] * len(image_ids)
    return pd.DataFrame(columns)


def least_plausible_first(manifest: pd.DataFrame) -> list[int]:
    return list(manifest.sort_values(["plausibility", "row"], kind="stable").index)


# ------------------------------------------------------------------------- screening page, built


def test_screening_page_is_offline_and_escaped(tmp_path):
    out, _, _, info = write_review(tmp_path)
    page_html = out.read_text(encoding="utf-8")
    assert "http://" not in page_html and "https://" not in page_html
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page_html)
    assert "default-src 'none'; img-src data: 'self' file:;" in page_html
    assert "<title>Screening &lt;initial/ckpt004&gt;</title>" in page_html
    assert '<meta name="radsynth:code_revision" content="cafe-dirty">' in page_html
    assert "Nothing leaves this computer" in page_html
    assert {key: value for key, value in info.items() if key != "sheet_bytes"} == {
        "content_id": embedded(page_html)["content_id"],
        "n_images": 30,
        "n_pages": 3,
        "page_size": 12,
        "html_bytes": out.stat().st_size,
    }
    files = sorted((tmp_path / "review_sheets").iterdir())
    assert len(files) == 3 and info["sheet_bytes"] == sum(path.stat().st_size for path in files)


def test_sprite_sheets_hold_each_page_least_plausible_first(tmp_path):
    out, manifest, images, _ = write_review(tmp_path, n=30, page_size=12)
    page_html = out.read_text(encoding="utf-8")
    data = embedded(page_html)
    order = least_plausible_first(manifest)
    assert data["order"] == order and data["sheet_columns"] == 4 and data["page_size"] == 12
    pages = sheets(out)
    assert [sheet.shape for sheet in pages] == [(3 * SIDE, 4 * SIDE)] * 2 + [(2 * SIDE, 4 * SIDE)]
    for page, sheet in enumerate(pages):
        shown = order[page * 12 : (page + 1) * 12]
        for tile, position in enumerate(shown):
            y, x = tile // 4 * SIDE, tile % 4 * SIDE
            np.testing.assert_array_equal(sheet[y : y + SIDE, x : x + SIDE], images[position])
    assert data["columns"] == list(MANIFEST_COLUMNS)
    assert data["rows"][0][:3] == ["1", "initial-ckpt004_000000", CHECKPOINT]
    assert data["comments"][:2] == ["# plausibility: radsynth screen", "# threshold: 0.2"]
    assert data["export_name"] == "screening_review_initial-ckpt004_{reviewer}.csv"


def test_a_rebuild_replaces_every_sprite_sheet(tmp_path):
    """Rebuilt with larger pages, the page's folder holds only the new sheets (no page 4 left
    from the first build)."""
    out, *_ = write_review(tmp_path, n=30, page_size=9)
    assert len(sheets(out)) == 4
    write_review(tmp_path, n=30, page_size=15)
    rebuilt = sheets(out)
    assert [sheet.shape for sheet in rebuilt] == [(4 * SIDE, 4 * SIDE)] * 2


def test_sprite_sheet_with_a_partial_last_row():
    images = np.arange(5 * 2 * 3, dtype=np.uint8).reshape(5, 2, 3)
    sheet = sprite_sheet(images, 2)
    assert sheet.shape == (6, 6)
    np.testing.assert_array_equal(sheet[4:6, 0:3], images[4])
    assert not sheet[4:6, 3:6].any()


def test_row_sort_keeps_manifest_order(tmp_path):
    out, _, _, _ = write_review(tmp_path, sort="row")
    assert embedded(out.read_text(encoding="utf-8"))["order"] == list(range(30))


def test_content_id_follows_images_and_manifest_not_page_layout(tmp_path):
    """Progress saved in a browser is kept when only the page size changes, never shared with
    another set."""
    manifest_csv, _, images = screening_inputs(tmp_path, 20)
    kwargs = {"reasons": REASONS, "title": "t", "provenance": {}}
    first = write_screening_review(
        manifest_csv, images, tmp_path / "a.html", page_size=8, **kwargs
    )["content_id"]
    again = write_screening_review(
        manifest_csv, images, tmp_path / "b.html", page_size=5, **kwargs
    )["content_id"]
    changed_image = images.copy()
    changed_image[3, 5, 5] ^= 1
    changed = write_screening_review(
        manifest_csv, changed_image, tmp_path / "c.html", page_size=8, **kwargs
    )
    assert (
        re.fullmatch(r"[0-9a-f]{16}", first) and first == again and changed["content_id"] != first
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"images": "one short"},
            r"20 rows need as many uint8 gray images \(N, H, W\), got uint8 \(19, 32, 32\)",
        ),
        ({"sort": "random"}, "sort 'random' is not one of plausibility, row"),
        ({"reasons": ()}, "give 1 to 9 exclusion reasons, got 0"),
        ({"reasons": ("a", "a")}, "exclusion reasons must be distinct"),
        ({"page_size": 0}, "page_size must be at least 1, got 0"),
    ],
)
def test_bad_screening_inputs_are_named(tmp_path, change, message):
    manifest_csv, _, images = screening_inputs(tmp_path, 20)
    kwargs = {"reasons": REASONS, "page_size": 8, "title": "t", "provenance": {}, **change}
    if kwargs.pop("images", None):
        images = images[:19]
    with pytest.raises(ValueError, match=message):
        write_screening_review(manifest_csv, images, tmp_path / "r.html", **kwargs)


def test_a_manifest_with_decisions_is_refused(tmp_path):
    manifest = manifest_frame(4).assign(
        decision=["", "exclude", "", ""], reviewer=["", "alice", "", ""]
    )
    write_table(manifest, tmp_path / "m.csv", provenance={})
    with pytest.raises(ValueError, match=r"m.csv: row 2: a decision is filled in"):
        write_screening_review(
            tmp_path / "m.csv",
            structured_images(4, 8),
            tmp_path / "r.html",
            reasons=REASONS,
            page_size=2,
            title="t",
            provenance={},
        )


def test_landmarks_are_embedded_per_manifest_row(tmp_path):
    manifest_csv, manifest, images = screening_inputs(tmp_path, 10)
    ids = list(manifest["image_id"])
    landmarks = landmark_frame([ids[3], ids[7]])
    landmarks.loc[1, "c5_top_left_x"] = np.nan
    kwargs = {"reasons": REASONS, "page_size": 4, "title": "t", "provenance": {}}
    write_screening_review(manifest_csv, images, tmp_path / "r.html", landmarks=landmarks, **kwargs)
    data = embedded((tmp_path / "r.html").read_text(encoding="utf-8"))
    assert data["landmark_labels"] == list(KEYPOINT_LABELS) and len(data["landmarks"]) == 10
    assert [row is None for row in data["landmarks"]] == [i not in (3, 7) for i in range(10)]
    assert data["landmarks"][3][:6] == [0.0, 2.0, 0.0, 1.0, 3.0, 0.05]
    assert data["landmarks"][7][-3:] == [23.0, 24.0, 1.0]
    c5_top_left = KEYPOINT_LABELS.index("C5 top left")
    assert data["landmarks"][7][3 * c5_top_left : 3 * c5_top_left + 3] == [
        None,
        2.0 + c5_top_left,
        round(c5_top_left / 22, 2),
    ]
    write_screening_review(manifest_csv, images, tmp_path / "plain.html", **kwargs)
    plain = embedded((tmp_path / "plain.html").read_text(encoding="utf-8"))
    assert plain["landmarks"] is None and plain["landmark_labels"] == []


@pytest.mark.parametrize(
    "change, message",
    [
        ("drop", "landmark table: no column c7_bottom_right_confidence"),
        ("unknown", r"landmark table: image 'elsewhere' is not in the screening manifest \(1 such"),
        ("twice", "landmark table: image 'initial-ckpt004_000001' twice"),
        ("outside", r"image 'initial-ckpt004_000002': C2 centroid x = 31.6 lies outside the 32x32"),
        ("text", "landmark table: a landmark value is not a number"),
    ],
)
def test_bad_landmark_tables_are_named(tmp_path, change, message):
    manifest_csv, manifest, images = screening_inputs(tmp_path, 4)
    landmarks = landmark_frame(list(manifest["image_id"].iloc[1:3]))
    if change == "drop":
        landmarks = landmarks.drop(columns="c7_bottom_right_confidence")
    elif change == "unknown":
        landmarks.loc[0, "image_id"] = "elsewhere"
    elif change == "twice":
        landmarks.loc[1, "image_id"] = landmarks.loc[0, "image_id"]
    elif change == "outside":
        landmarks.loc[1, "c2_centroid_x"] = SIDE - 0.4
    else:
        landmarks["c3_top_left_y"] = landmarks["c3_top_left_y"].astype(object)
        landmarks.loc[0, "c3_top_left_y"] = "high"
    with pytest.raises(ValueError, match=message):
        write_screening_review(
            manifest_csv,
            images,
            tmp_path / "r.html",
            reasons=REASONS,
            page_size=2,
            title="t",
            provenance={},
            landmarks=landmarks,
        )


def test_template_fields_must_match_placeholders():
    with pytest.raises(ValueError, match=r"placeholders .* do not match fields \['TITLE'\]"):
        render_page("pairs_review.html", {"TITLE": "t"})


# ------------------------------------------------------------------------- memorization verdicts


def pairs_inputs(tmp_path: Path) -> tuple[Path, dict, dict]:
    """Four pairs of 16x16 images; real r2 is in two pairs."""
    rng = np.random.default_rng(3)
    pairs = pd.DataFrame(
        {
            "rank": [1, 2, 3, 4],
            "real_id": ["r1", "r2", "r2", "r4"],
            "synthetic_id": ["s1", "s2", "s3", "s4"],
            "similarity": [0.99, 0.98, 0.97, 0.96],
            "patch_distance": [0.05, 0.12, 0.2, 0.3],
            "flag_le_0.15": [True, True, False, False],
            "encoder": "imagededup ViT",
            "encoder_weights": "vit-base",
        }
    )
    path = tmp_path / "pairs.csv"
    write_table(pairs, path, provenance={"encoder_name": "imagededup ViT"})
    real = {name: rng.integers(0, 256, (16, 16), dtype=np.uint8) for name in ("r1", "r2", "r4")}
    synthetic = {
        name: rng.integers(0, 256, (16, 16), dtype=np.uint8) for name in ("s1", "s2", "s3", "s4")
    }
    return path, real, synthetic


def verdict_file(path: Path, body: str) -> Path:
    path.write_text(
        "# review_page: 0123 (radsynth.audit.review)\n"
        "rank,real_id,synthetic_id,verdict,reviewer,note\n" + body,
        encoding="utf-8",
    )
    return path


def test_merge_of_two_reviewers_verdicts(tmp_path):
    pairs_csv, _, _ = pairs_inputs(tmp_path)
    alice = verdict_file(
        tmp_path / "alice.csv",
        "1,r1,s1,memorized,alice,same fracture line\n"
        "2,r2,s2,unrelated,alice,\n"
        "3,r2,s3,Similar but  distinct,alice,\n4,r4,s4,,,\n",
    )
    bob = verdict_file(
        tmp_path / "bob.csv",
        '1,r1,s1,memorized,bob,\n2,r2,s2,similar but distinct,bob,"collar, left"\n',
    )
    merged, disagreements = merge_pair_verdicts(pairs_csv, [alice, bob])
    assert list(merged.columns[-6:]) == [
        "verdict_alice",
        "verdict_bob",
        "n_verdicts",
        "consensus",
        "any_memorized",
        "notes",
    ]
    shown = ["rank", "verdict_alice", "verdict_bob", "n_verdicts", "consensus", "any_memorized"]
    assert merged[shown].values.tolist() == [
        [1, "memorized", "memorized", 2, "memorized", True],
        [2, "unrelated", "similar but distinct", 2, DISAGREEMENT, False],
        [3, "similar but distinct", "", 1, "similar but distinct", False],
        [4, "", "", 0, UNREVIEWED, False],
    ]
    assert list(merged["notes"]) == ["alice: same fracture line", "bob: collar, left", "", ""]
    assert list(disagreements.columns) == list(VERDICT_RECORD_COLUMNS)
    assert disagreements[["rank", "reviewer", "verdict", "file", "line"]].values.tolist() == [
        [2, "alice", "unrelated", str(alice), 4],
        [2, "bob", "similar but distinct", str(bob), 4],
    ]


def test_without_verdict_files_every_pair_is_unreviewed(tmp_path):
    pairs_csv, _, _ = pairs_inputs(tmp_path)
    merged, disagreements = merge_pair_verdicts(pairs_csv, [])
    assert list(merged["consensus"]) == [UNREVIEWED] * 4 and list(merged["n_verdicts"]) == [0] * 4
    assert list(disagreements.columns) == list(VERDICT_RECORD_COLUMNS) and disagreements.empty


def test_pairs_page_embeds_each_pair_and_names_a_missing_image(tmp_path):
    pairs_csv, real, synthetic = pairs_inputs(tmp_path)
    info = write_pairs_review(
        pairs_csv, real, synthetic, tmp_path / "pairs.html", title="Pairs", provenance=PROVENANCE
    )
    page_html = (tmp_path / "pairs.html").read_text(encoding="utf-8")
    data = embedded(page_html)
    assert info == {
        "content_id": data["content_id"],
        "n_pairs": 4,
        "html_bytes": (tmp_path / "pairs.html").stat().st_size,
    }
    assert "http://" not in page_html and "https://" not in page_html
    assert [(pair["rank"], pair["real_id"], pair["synthetic_id"]) for pair in data["pairs"]] == [
        (1, "r1", "s1"),
        (2, "r2", "s2"),
        (3, "r2", "s3"),
        (4, "r4", "s4"),
    ]
    shown = np.asarray(
        Image.open(io.BytesIO(base64.b64decode(data["pairs"][2]["synthetic"].split(",", 1)[1])))
    )
    np.testing.assert_array_equal(shown, synthetic["s3"])
    assert (
        data["encoder"] == "imagededup ViT"
        and data["comments"][0] == "# encoder_name: imagededup ViT"
    )
    del synthetic["s3"]
    with pytest.raises(ValueError, match="pairs.csv: pair rank 3: no synthetic image 's3' given"):
        write_pairs_review(
            pairs_csv, real, synthetic, tmp_path / "p.html", title="Pairs", provenance={}
        )


# ----------------------------------------------------------------------------- in the browser


def open_browser(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def watch(page, out: Path) -> tuple[list[str], list[str]]:
    """Requests other than the page file `out` itself, its sprite sheets' files beside it and
    blob: exports, and script errors, as they happen."""
    requests, errors = [], []
    sheets_folder = (out.parent / f"{out.stem}_sheets").as_uri() + "/"
    page.on(
        "request",
        lambda request: (
            requests.append(request.url)
            if request.url != out.as_uri() and not request.url.startswith((sheets_folder, "blob:"))
            else None
        ),
    )
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    return requests, errors


def start(page, reviewer: str) -> None:
    page.fill("#reviewer-id", reviewer)
    page.click("#start-button")


def wait_drawn(page, number: int) -> None:
    page.wait_for_selector(f'#grid[data-drawn="{number}"]')


def shown_tiles(page) -> list[dict]:
    return page.eval_on_selector_all(
        ".tile:not([hidden])",
        """tiles => tiles.map(tile => ({
        id: tile.dataset.imageId, decision: tile.dataset.decision,
        reason: tile.querySelector("select").value}))""",
    )


def tile(page, index: int):
    return page.locator(".tile").nth(index)


def export(page, tmp_path: Path, name: str) -> Path:
    with page.expect_download() as download_info:
        page.click("#export-button")
    download = download_info.value
    assert download.suggested_filename == name
    saved = tmp_path / name
    download.save_as(saved)
    return saved


@pytest.mark.browser
@needs_chromium
def test_reviewer_excludes_resumes_and_exports_the_merged_format_in_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    out, manifest, _, _ = write_review(tmp_path, n=30, page_size=12)
    order = least_plausible_first(manifest)
    ids = list(manifest["image_id"])
    with sync_playwright() as playwright:
        browser = open_browser(playwright)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            requests, errors = watch(page, out)
            page.goto(out.as_uri())
            start(page, "bad id!")
            assert "Enter a reviewer ID" in page.inner_text("#reviewer-error") and page.is_hidden(
                "#review-view"
            )
            start(page, "alice")
            wait_drawn(page, 1)
            assert page.inner_text("#page-title") == "Page 1 of 3"
            assert [shown["id"] for shown in shown_tiles(page)] == [ids[i] for i in order[:12]]

            # page 1: keyboard, then mouse; space toggles back; Enter marks the page reviewed and
            # goes on
            page.keyboard.press("ArrowRight")
            page.keyboard.press("ArrowRight")
            page.keyboard.press("x")
            page.keyboard.press("2")
            tile(page, 5).locator(".shot").click()
            tile(page, 5).locator("select").select_option(REASONS[0])
            page.keyboard.press("ArrowLeft")
            page.keyboard.press(" ")
            assert shown_tiles(page)[4]["decision"] == "exclude"
            page.keyboard.press(" ")
            assert [(t["decision"], t["reason"]) for t in shown_tiles(page)[:6]] == [
                ("", ""),
                ("", ""),
                ("exclude", REASONS[1]),
                ("", ""),
                ("", ""),
                ("exclude", REASONS[0]),
            ]
            page.keyboard.press("Enter")
            wait_drawn(page, 2)
            assert page.inner_text("#page-title") == "Page 2 of 3"

            # page 2: one row down with the keyboard, one click; the page is not marked reviewed
            columns = page.evaluate(
                "getComputedStyle(document.getElementById('grid'))"
                ".gridTemplateColumns.split(' ').length"
            )
            page.keyboard.press("ArrowDown")
            page.keyboard.press("3")
            tile(page, columns + 1).locator(".shot").click()
            page_two = shown_tiles(page)

            page.reload()
            assert page.input_value("#reviewer-id") == "alice"
            assert page.inner_text("#resume-note").startswith(
                "Saved progress found for alice: 4 excluded, 14 of 30 images decided, "
                "on page 2 of 3"
            )
            start(page, "alice")
            wait_drawn(page, 2)
            assert shown_tiles(page) == page_two
            page.keyboard.press("PageUp")
            wait_drawn(page, 1)
            assert [(t["decision"], t["reason"]) for t in shown_tiles(page)[:6]] == [
                ("include", ""),
                ("include", ""),
                ("exclude", REASONS[1]),
                ("include", ""),
                ("include", ""),
                ("exclude", REASONS[0]),
            ]
            page.keyboard.press("n")
            wait_drawn(page, 2)
            page.keyboard.press("n")
            wait_drawn(page, 3)
            exported = export(page, tmp_path, "screening_review_initial-ckpt004_alice.csv")

            page.reload()
            start(page, "bob")
            wait_drawn(page, 1)
            assert {t["decision"] for t in shown_tiles(page)} == {""}
        finally:
            browser.close()
    assert errors == [] and requests == []

    decisions = read_reviewer_file(
        exported, REVIEWED_MANIFEST, {(image,) for image in ids}, "the manifest"
    )
    excluded = {
        ids[order[2]]: REASONS[1],
        ids[order[5]]: REASONS[0],
        ids[order[12 + columns]]: REASONS[2],
        ids[order[12 + columns + 1]]: "",
    }
    included = {ids[i] for i in order[:12]} - set(excluded)
    assert dict(zip(decisions["image_id"], decisions["decision"])) == {
        **{image: "exclude" for image in excluded},
        **{image: "include" for image in included},
    }
    assert dict(zip(decisions["image_id"], decisions["reason"])) == {
        **excluded,
        **{image: "" for image in included},
    }
    assert set(decisions["reviewer"]) == {"alice"}

    merged, conflicts = merge_reviews(manifest, [exported])
    by_person = merged["decided_by"] == "alice"
    assert set(merged.loc[by_person, "image_id"]) == set(excluded) | included and conflicts.empty
    assert set(merged.loc[merged["final_decision"] == "exclude", "image_id"]) == set(
        excluded
    ) | set(merged.loc[~by_person & (merged["proposed"] == "exclude"), "image_id"])
    assert (merged.loc[~by_person, "decided_by"] == AUTOMATED).all()

    as_written = read_table(tmp_path / "screening_manifest.csv", dtype=str, keep_default_na=False)
    exported_text = read_table(exported, dtype=str, keep_default_na=False)
    assert list(exported_text.columns) == list(MANIFEST_COLUMNS)
    kept = [
        column for column in MANIFEST_COLUMNS if column not in ("decision", "reason", "reviewer")
    ]
    pd.testing.assert_frame_equal(exported_text[kept], as_written[kept])
    assert exported.read_text(encoding="utf-8").startswith(
        "# plausibility: radsynth screen\n# threshold: 0.2\n# review_page: "
    )


LANDMARKS_SHOWN = """svg => [getComputedStyle(svg).display,
  Array.from(svg.querySelectorAll("circle"), (c) => [Number(c.getAttribute("cx")),
    Number(c.getAttribute("cy")), c.querySelector("title").textContent]),
  svg.querySelectorAll("polygon").length]"""


@pytest.mark.browser
@needs_chromium
def test_landmarks_overlay_toggles_over_tiles_and_the_enlarged_image_in_chromium(tmp_path):
    """Two images of page 1 with landmarks (one with a landmark not predicted), one without:
    hidden at first, shown with the checkbox, hidden again with the l key."""
    from playwright.sync_api import sync_playwright

    manifest_csv, manifest, images = screening_inputs(tmp_path, 30)
    order = least_plausible_first(manifest)
    ids = list(manifest["image_id"])
    landmarks = landmark_frame([ids[order[0]], ids[order[2]]])
    landmarks.loc[1, "c7_bottom_left_y"] = np.nan
    out = tmp_path / "review.html"
    write_screening_review(
        manifest_csv,
        images,
        out,
        reasons=REASONS,
        page_size=12,
        title="t",
        provenance={},
        landmarks=landmarks,
    )
    expected = [
        [float(k), 2.0 + k, f"{label}, confidence {round(k / 22, 2):g}"]
        for k, label in enumerate(KEYPOINT_LABELS)
    ]
    with sync_playwright() as playwright:
        browser = open_browser(playwright)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            requests, errors = watch(page, out)
            page.goto(out.as_uri())
            start(page, "alice")
            wait_drawn(page, 1)
            overlays = [tile(page, index).locator("svg") for index in range(3)]
            assert overlays[0].evaluate(LANDMARKS_SHOWN) == ["none", expected, 6]
            page.check("#landmarks-input")
            first, second, third = (overlay.evaluate(LANDMARKS_SHOWN) for overlay in overlays)
            assert first == ["block", expected, 6] and second == ["block", [], 0]
            c7_bottom_left = KEYPOINT_LABELS.index("C7 bottom left")
            assert third[1] == [
                [x + 1, y, title] for k, (x, y, title) in enumerate(expected) if k != c7_bottom_left
            ]
            assert overlays[0].evaluate("svg => svg.getAttribute('viewBox')") == "-0.5 -0.5 32 32"
            tile(page, 2).locator(".zoom").click()
            assert page.locator("#zoom-landmarks").evaluate(LANDMARKS_SHOWN) == third
            page.keyboard.press("Escape")
            tile(page, 0).locator(".shot").focus()
            page.keyboard.press("l")
            assert overlays[0].evaluate(LANDMARKS_SHOWN)[0] == "none"
            assert not page.is_checked("#landmarks-input")
        finally:
            browser.close()
    assert errors == [] and requests == []


@pytest.mark.browser
@needs_chromium
def test_a_page_without_its_sheets_names_the_missing_file_in_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    out, *_ = write_review(tmp_path)
    (tmp_path / "review_sheets" / "page-0001.png").unlink()
    with sync_playwright() as playwright:
        browser = open_browser(playwright)
        try:
            page = browser.new_page()
            page.goto(out.as_uri())
            start(page, "alice")
            page.wait_for_function("document.getElementById('status').textContent !== ''")
            assert page.inner_text("#status") == (
                "Could not load review_sheets/page-0001.png: keep its folder beside this page."
            )
            page.keyboard.press("PageDown")
            wait_drawn(page, 2)
        finally:
            browser.close()


def zoomed(page, index: int) -> np.ndarray:
    """The pixels of the page's `index`-th tile as the enlarged view shows them: a screenshot of
    its canvas, scaled up by a whole factor with sharp pixels, read at each pixel's centre. (The
    sprite sheets are files, so page scripts may draw them but not read them back.)"""
    tile(page, index).locator(".zoom").click()
    position = tile(page, index).get_attribute("data-position")
    page.wait_for_selector(f'#zoom-canvas[data-position="{position}"]')
    shown = np.asarray(Image.open(io.BytesIO(page.locator("#zoom-canvas").screenshot())))
    page.keyboard.press("Escape")
    width = page.eval_on_selector("#zoom-canvas", "canvas => canvas.width")
    scale = shown.shape[1] // width
    assert shown.shape[1] == scale * width and (shown[..., 0] == shown[..., 2]).all()
    return shown[scale // 2 :: scale, scale // 2 :: scale, 0]


CHANGE_PAGE = """async (target) => {
  const grid = document.getElementById("grid");
  const started = performance.now();
  const drawn = new Promise((resolve) => new MutationObserver((_, observer) => {
    if (grid.dataset.drawn === String(target)) {
      observer.disconnect();
      resolve(performance.now() - started);
    }
  }).observe(grid, { attributes: true }));
  const input = document.getElementById("page-input");
  input.value = String(target);
  input.dispatchEvent(new Event("change"));
  return await drawn;
}"""


@pytest.mark.browser
@needs_chromium
def test_nine_thousand_images_load_and_page_in_chromium(tmp_path):
    """The paper's large set: the page opens, and page 50 shows its images' ids and pixels. Times
    are printed (pytest -s), not asserted: they depend on the machine."""
    from playwright.sync_api import sync_playwright

    manifest_csv, manifest, images = screening_inputs(tmp_path, LARGE_SET, LARGE_SIDE)
    out = tmp_path / "large.html"
    started = time.perf_counter()
    info = write_screening_review(
        manifest_csv,
        images,
        out,
        reasons=REASONS,
        page_size=LARGE_PAGE_SIZE,
        title="large set",
        provenance=PROVENANCE,
    )
    built = time.perf_counter() - started
    order = least_plausible_first(manifest)
    far = order[(FAR_PAGE - 1) * LARGE_PAGE_SIZE : FAR_PAGE * LARGE_PAGE_SIZE]
    with sync_playwright() as playwright:
        browser = open_browser(playwright)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            requests, errors = watch(page, out)
            started = time.perf_counter()
            page.goto(out.as_uri(), timeout=120_000)
            loaded = time.perf_counter() - started
            start(page, "carol")
            wait_drawn(page, 1)
            first_page = time.perf_counter() - started
            to_far_page = page.evaluate(CHANGE_PAGE, FAR_PAGE)
            assert page.inner_text("#page-title") == f"Page {FAR_PAGE} of {info['n_pages']}"
            assert [shown["id"] for shown in shown_tiles(page)] == list(
                manifest["image_id"].iloc[far]
            )
            for index in (0, LARGE_PAGE_SIZE // 2, LARGE_PAGE_SIZE - 1):
                np.testing.assert_array_equal(zoomed(page, index), images[far[index]])
            to_next_page = page.evaluate(CHANGE_PAGE, FAR_PAGE + 1)
        finally:
            browser.close()
    assert errors == [] and requests == []
    print(
        f"\n{LARGE_SET} images {LARGE_SIDE}x{LARGE_SIDE}, {info['n_pages']} pages: "
        f"html {info['html_bytes'] / 1e6:.1f} MB "
        f"(sprite sheets {info['sheet_bytes'] / 1e6:.1f} MB), built in {built:.1f} s; "
        f"opened in {loaded:.2f} s, first page drawn {first_page:.2f} s after navigation; "
        f"page {FAR_PAGE} in {to_far_page:.0f} ms, "
        f"page {FAR_PAGE + 1} in {to_next_page:.0f} ms"
    )


@pytest.mark.browser
@needs_chromium
def test_pair_verdicts_resume_export_and_merge_with_a_second_reviewer_in_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    pairs_csv, real, synthetic = pairs_inputs(tmp_path)
    out = tmp_path / "pairs.html"
    write_pairs_review(
        pairs_csv, real, synthetic, out, title="Memorization pairs", provenance=PROVENANCE
    )
    with sync_playwright() as playwright:
        browser = open_browser(playwright)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            requests, errors = watch(page, out)
            page.goto(out.as_uri())
            start(page, "alice")
            assert page.inner_text("#pair-title") == "Pair 1 of 4 (rank 1)"
            assert page.eval_on_selector(
                "#real-image", "image => [image.naturalWidth, image.width]"
            ) == [16, 512]
            page.keyboard.press("1")
            page.fill("#note", "same clip, same noise")
            page.click("#next-button")
            page.keyboard.press("3")
            page.keyboard.press("ArrowRight")
            page.click("#verdicts label:nth-of-type(2)")
            assert page.is_checked("#verdict-2")

            page.reload()
            assert "3 of 4 pairs with a verdict" in page.inner_text("#resume-note")
            start(page, "alice")
            assert page.inner_text("#pair-title") == "Pair 3 of 4 (rank 3)"
            page.keyboard.press("ArrowLeft")
            assert page.is_checked("#verdict-3")
            page.keyboard.press("n")
            assert page.inner_text("#pair-title") == "Pair 4 of 4 (rank 4)"
            exported = export(page, tmp_path, "pair_verdicts_alice.csv")
        finally:
            browser.close()
    assert errors == [] and requests == []

    assert read_table(exported, dtype=str, keep_default_na=False).values.tolist() == [
        ["1", "r1", "s1", "memorized", "alice", "same clip, same noise"],
        ["2", "r2", "s2", "unrelated", "alice", ""],
        ["3", "r2", "s3", "similar but distinct", "alice", ""],
        ["4", "r4", "s4", "", "", ""],
    ]
    bob = verdict_file(
        tmp_path / "pair_verdicts_bob.csv",
        "1,r1,s1,memorized,bob,\n2,r2,s2,memorized,bob,\n"
        "3,r2,s3,similar but distinct,bob,\n"
        "4,r4,s4,unrelated,bob,\n",
    )
    merged, disagreements = merge_pair_verdicts(pairs_csv, [exported, bob])
    assert list(merged["consensus"]) == [
        "memorized",
        DISAGREEMENT,
        "similar but distinct",
        "unrelated",
    ]
    assert list(merged["any_memorized"]) == [True, True, False, False]
    assert disagreements[["rank", "reviewer", "verdict"]].values.tolist() == [
        [2, "alice", "unrelated"],
        [2, "bob", "memorized"],
    ]
