"""Offline rating form: self-contained and blind, and end to end in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS

from radsynth.core.html import fill_template, script_json
from radsynth.turing.form import read_png, write_rating_form
from radsynth.turing.quartets import build_quartets, read_layout

CHECKPOINTS = ("ckpt034", "ckpt040", "ckpt080")
PROVENANCE = {"config_hash": "f00d", "code_revision": "cafe-dirty"}
#: What the simulated rater answers: quartet -> (position chosen as real, ratings of positions
#: 1..4).
ANSWERS = {1: (2, [3, 4, 1, 2]), 2: (4, [2, 2, 3, 4]), 3: (1, [4, 1, 2, 3])}
LETTERS = "ABCD"
#: The paper's Likert anchors, spoken after the value by the rating buttons' accessible names.
LIKERT_ANCHORS = {1: " (unrealistic)", 4: " (fully realistic)"}


def study(tmp_path: Path, n_quartets: int = 3) -> tuple[Path, pd.DataFrame]:
    """A tiny quartet study (16x16 images) with its answer key removed, as a form builder sees
    it."""
    rng = np.random.default_rng(5)
    real = {f"000{i}050": rng.integers(0, 256, (16, 16), dtype=np.uint8) for i in range(4)}
    synthetic = {
        label: {f"{label}-img{i}": rng.integers(0, 256, (16, 16), dtype=np.uint8) for i in range(4)}
        for label in CHECKPOINTS
    }
    plan = build_quartets(
        real,
        synthetic,
        tmp_path / "turing",
        n_quartets=n_quartets,
        seed=3,
        provenance=PROVENANCE,
        progress=False,
    )
    shutil.rmtree(tmp_path / "turing" / "key")
    return tmp_path / "turing" / "images", plan


def write_form(
    tmp_path: Path, images_dir: Path, name: str = "form.html", title: str = "Spine test"
) -> Path:
    out_html = tmp_path / name
    write_rating_form(
        images_dir,
        out_html,
        title=title,
        instructions="Pick the real image.\n\nRate all four.",
        provenance=PROVENANCE,
    )
    return out_html


def embedded_data(page_html: str) -> dict:
    match = re.search(
        r'<script type="application/json" id="form-data">(.*?)</script>', page_html, re.S
    )
    return json.loads(match.group(1))


def test_page_is_self_contained_and_reveals_no_group_or_source(tmp_path):
    images_dir, plan = study(tmp_path)
    page_html = write_form(tmp_path, images_dir).read_text(encoding="utf-8")
    assert "http://" not in page_html and "https://" not in page_html
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=\"(?!data:)", page_html)
    for secret in ["ckpt", *plan["source_id"], *plan["image"], "key.csv", "sources.csv"]:
        assert secret not in page_html, secret
    assert page_html.count("data:image/png;base64,") == 12
    assert '<meta name="radsynth:code_revision" content="cafe-dirty">' in page_html


def test_embedded_images_follow_the_layout(tmp_path):
    images_dir, _ = study(tmp_path)
    data = embedded_data(write_form(tmp_path, images_dir).read_text(encoding="utf-8"))
    layout = read_layout(images_dir)
    assert [q["quartet"] for q in data["quartets"]] == [1, 2, 3]
    uris = [uri for q in data["quartets"] for uri in q["images"]]
    decoded = [base64.b64decode(uri.removeprefix("data:image/png;base64,")) for uri in uris]
    assert decoded == [(images_dir / name).read_bytes() for name in layout["image"]]


def test_form_id_is_a_content_hash(tmp_path):
    images_dir, _ = study(tmp_path)
    first = embedded_data(write_form(tmp_path, images_dir, "a.html").read_text())["form_id"]
    again = embedded_data(write_form(tmp_path, images_dir, "b.html").read_text())["form_id"]
    assert re.fullmatch(r"[0-9a-f]{16}", first) and first == again
    some_png = read_layout(images_dir)["image"].iloc[0]
    shutil.copy(images_dir / read_layout(images_dir)["image"].iloc[1], images_dir / some_png)
    changed = embedded_data(write_form(tmp_path, images_dir, "c.html").read_text())["form_id"]
    assert changed != first


def test_title_is_escaped_and_scripts_cannot_be_closed_early(tmp_path):
    images_dir, _ = study(tmp_path, n_quartets=1)
    page_html = write_form(tmp_path, images_dir, title="C-spine <b>study</b> & co").read_text()
    assert "<title>C-spine &lt;b&gt;study&lt;/b&gt; &amp; co</title>" in page_html
    assert script_json({"x": "</script><b>"}) == '{"x":"\\u003c/script>\\u003cb>"}'


def test_template_fields_must_match_placeholders():
    with pytest.raises(
        ValueError, match=r"placeholders \['TITLE'\] do not match fields \['TITLE', 'X'\]"
    ):
        fill_template("<h1>{{TITLE}}</h1>", {"TITLE": "t", "X": "x"}, name="form.html")
    assert (
        fill_template("{{TITLE}}|{{TITLE}}", {"TITLE": "{{TITLE}}"}, name="form.html")
        == "{{TITLE}}|{{TITLE}}"
    )


def test_non_png_image_is_named(tmp_path):
    fake = tmp_path / "q01_0000abcd.png"
    fake.write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match="q01_0000abcd.png is not a PNG file"):
        read_png(fake)


def fill_quartet(page, quartet: int) -> None:
    """Answer one quartet through the accessible labels; Next must wait for the last answer."""
    real_position, ratings = ANSWERS[quartet]
    for letter, rating in zip(LETTERS, ratings):
        page.get_by_label(
            f"Image {letter}: {rating}{LIKERT_ANCHORS.get(rating, '')}", exact=True
        ).check()
    assert page.is_disabled("#next-button")
    page.get_by_label(f"Image {LETTERS[real_position - 1]} is the real image").check()
    assert page.is_enabled("#next-button")


def assert_quartet_restored(page, quartet: int) -> None:
    real_position, ratings = ANSWERS[quartet]
    for position, rating in enumerate(ratings, start=1):
        checked = [v for v in range(1, 5) if page.is_checked(f"#rating-{position}-{v}")]
        assert checked == [rating], (quartet, position)
        assert page.is_checked(f"#real-{position}") == (position == real_position)


def expected_ratings(rater: str) -> pd.DataFrame:
    rows = [
        (rater, quartet, position, int(position == real), ratings[position - 1])
        for quartet, (real, ratings) in ANSWERS.items()
        for position in range(1, 5)
    ]
    return pd.DataFrame(rows, columns=["rater", "quartet", "position", "chosen_real", "rating"])


@pytest.mark.browser
@pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (Debian package chromium)"
)
def test_rater_completes_resumes_and_exports_in_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    images_dir, _ = study(tmp_path)
    form = write_form(tmp_path, images_dir)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            requests, errors = [], []
            page.on("request", lambda request: requests.append(request.url))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(form.as_uri())

            page.fill("#rater-id", "bad id!")
            page.click("#start-button")
            assert "Enter a rater ID" in page.inner_text("#rater-error")
            assert page.is_hidden("#quartet-view")

            page.fill("#rater-id", "R-07")
            page.click("#start-button")
            assert page.inner_text("#quartet-title") == "Quartet 1 of 3"
            assert page.is_disabled("#prev-button") and page.is_disabled("#next-button")
            widths = page.eval_on_selector_all(
                "#grid img", "images => images.map(i => i.naturalWidth)"
            )
            assert widths == [16, 16, 16, 16]
            fill_quartet(page, 1)
            page.click("#next-button")

            assert page.inner_text("#quartet-title") == "Quartet 2 of 3"
            page.focus("#rating-1-1")
            page.keyboard.press("ArrowRight")
            assert page.is_checked("#rating-1-2")
            fill_quartet(page, 2)
            page.click("#next-button")
            assert page.inner_text("#quartet-title") == "Quartet 3 of 3"
            assert page.inner_text("#next-button") == "Finish"

            page.reload()
            assert page.input_value("#rater-id") == "R-07"
            assert "2 of 3 quartets complete" in page.inner_text("#resume-note")
            page.click("#start-button")
            assert page.inner_text("#quartet-title") == "Quartet 3 of 3"
            page.click("#prev-button")
            assert page.inner_text("#quartet-title") == "Quartet 2 of 3"
            assert_quartet_restored(page, 2)
            page.click("#next-button")
            fill_quartet(page, 3)
            page.click("#next-button")
            assert page.is_visible("#done-view")

            with page.expect_download() as download_info:
                page.click("#export-button")
            download = download_info.value
            assert download.suggested_filename == "ratings_R-07.csv"
            exported = pd.read_csv(io.StringIO(Path(download.path()).read_text(encoding="utf-8")))
            pd.testing.assert_frame_equal(exported, expected_ratings("R-07"))

            page.reload()
            page.fill("#rater-id", "R-08")
            page.click("#start-button")
            assert page.inner_text("#quartet-title") == "Quartet 1 of 3"
            assert page.eval_on_selector_all("input:checked", "inputs => inputs.length") == 0
        finally:
            browser.close()
    assert errors == []
    assert all(url.startswith(("file:", "data:", "blob:")) for url in requests), requests
