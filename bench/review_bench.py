"""The screening review page at the paper's scale: 9,000 images per checkpoint (its large set).

Questions answered in this one run, for 64x64 and for the paper's 256x256 images:
1. How long does `write_screening_review` take, and how large is the page?
2. In headless Chromium (Debian's), how long until the page has loaded (navigation timing's
   load event), until the first page is drawn once the reviewer starts, and how long does a jump
   to page 50 and a step to page 51 take? Page times are measured inside the page, from the
   action to the tiles drawn on their canvases, so the driver's round trips are not counted.

Images are demo phantoms (`radsynth.demo.phantom`, resized as preprocessing does), `PHANTOMS`
of them, each used with fresh Gaussian noise (sd `NOISE_SD` grey levels) so no two images are
alike and the sprite sheets compress like noisy radiographs, not like copies.

Run: `python bench/review_bench.py` (needs /usr/bin/chromium and playwright).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from radsynth.audit.review import write_screening_review
from radsynth.audit.screening import MANIFEST_COLUMNS
from radsynth.core.tables import write_table
from radsynth.data.preprocess import to_uint8
from radsynth.data.resize import resize_image
from radsynth.demo.phantom import render_phantom, sample_params

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]
N_IMAGES = 9_000
SIDES = (64, 256)
PAGE_SIZE = 48
FAR_PAGE = 50
PHANTOMS = 200
NOISE_SD = 3.0
SEED = 0

#: Runs `action` in the page and resolves with the ms until the grid reports page `target` drawn.
UNTIL_DRAWN = """async ([action, target]) => {
  const grid = document.getElementById("grid");
  const started = performance.now();
  const drawn = new Promise((resolve) => new MutationObserver((_, observer) => {
    if (grid.dataset.drawn === String(target)) {
      observer.disconnect();
      resolve(performance.now() - started);
    }
  }).observe(grid, { attributes: true }));
  if (action === "start") {
    document.getElementById("reviewer-id").value = "bench";
    document.getElementById("start-button").click();
  } else {
    const input = document.getElementById("page-input");
    input.value = String(target);
    input.dispatchEvent(new Event("change"));
  }
  return await drawn;
}"""


def phantom_images(n: int, side: int) -> np.ndarray:
    """`n` noisy left-facing phantoms of `side` px, `PHANTOMS` distinct anatomies."""
    base = []
    for index in range(PHANTOMS):
        rng = np.random.default_rng([SEED, index])
        phantom = render_phantom(
            rng, sample_params(rng, min_side=side, max_side=side + side // 4, negative=False)
        )
        base.append(to_uint8(resize_image(phantom.image, side, "resize")[0]).astype(np.float32))
    rng = np.random.default_rng(SEED)
    images = np.empty((n, side, side), dtype=np.uint8)
    for index in range(n):
        noisy = base[index % PHANTOMS] + rng.normal(0.0, NOISE_SD, (side, side)).astype(np.float32)
        images[index] = np.clip(np.rint(noisy), 0, 255)
    return images


def manifest(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(SEED)
    plausibility = rng.random(n).round(6)
    return pd.DataFrame(
        {
            "row": np.arange(1, n + 1),
            "image_id": [f"large-ckpt040_{i:06d}" for i in range(n)],
            "checkpoint": "large/ckpt040",
            "shard": [f"shard{i // 1000}.zarr" for i in range(n)],
            "index": np.arange(n) % 1000,
            "seed": np.arange(n),
            "flipped": False,
            "plausibility": plausibility,
            "atypical_x": 0.5,
            "atypical_y": 0.5,
            "nearest_real_id": "real000",
            "nearest_real_similarity": 0.9,
            "mean": 100.0,
            "std": 40.0,
            "p01": 3.0,
            "p99": 250.0,
            "proposed": np.where(plausibility < 0.05, "exclude", "include"),
            "decision": "",
            "reason": "",
            "reviewer": "",
        }
    ).loc[:, list(MANIFEST_COLUMNS)]


def browse(page_html: Path) -> dict[str, float]:
    """Load time, and ms to the first, the FAR_PAGE-th and the next page drawn."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(page_html.as_uri(), timeout=600_000)
            load = page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
            first = page.evaluate(UNTIL_DRAWN, ["start", 1])
            far = page.evaluate(UNTIL_DRAWN, ["page", FAR_PAGE])
            after = page.evaluate(UNTIL_DRAWN, ["page", FAR_PAGE + 1])
            heap = page.evaluate("performance.memory.usedJSHeapSize")
        finally:
            browser.close()
    return {"load": load, "first": first, "far": far, "after": after, "heap": heap}


def bench_side(side: int) -> str:
    images = phantom_images(N_IMAGES, side)
    with tempfile.TemporaryDirectory() as tmp:
        manifest_csv, out = Path(tmp) / "screening_manifest.csv", Path(tmp) / "review.html"
        write_table(manifest(N_IMAGES), manifest_csv, provenance={"bench": "review"})
        started = time.perf_counter()
        info = write_screening_review(
            manifest_csv,
            images,
            out,
            reasons=("implausible anatomy", "artefact", "other"),
            page_size=PAGE_SIZE,
            title="bench",
            provenance={},
        )
        built = time.perf_counter() - started
        times = browse(out)
    return (
        f"review page, {N_IMAGES} images {side}x{side}, {info['n_pages']} pages of {PAGE_SIZE}: "
        f"{info['html_bytes'] / 1e6:.1f} MB, built in {built:.1f} s; loaded "
        f"{times['load'] / 1000:.2f} s, "
        f"first page {times['first']:.0f} ms after start, page {FAR_PAGE} {times['far']:.0f} ms, "
        f"page {FAR_PAGE + 1} {times['after']:.0f} ms; JS heap {times['heap'] / 1e6:.0f} MB"
    )


def run() -> list[str]:
    if not CHROMIUM.exists():
        return [f"review page: skipped, {CHROMIUM} is not installed"]
    return [bench_side(side) for side in SIDES]


if __name__ == "__main__":
    for line in run():
        print(line, flush=True)
    sys.exit(0)
