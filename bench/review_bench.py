"""The screening review page at the paper's scale: 9,000 images per checkpoint (its large set).

Questions answered in this one run, for 64x64 and for the paper's 256x256 images:
1. How long does `write_screening_review` take, and how large are the page and its sprite sheets?
2. In headless Chromium (Debian's), opened from disk: how long until the reviewer sees the first
   page (the load event, then the start button to the tiles drawn), and how long does a jump to
   page 50 and a step to page 51 take? Page times are measured inside the page, from the action to
   the tiles drawn on their canvases, so the driver's round trips are not counted.
3. How much memory does the browser hold for it? Chromium's browser process (found through the
   DevTools protocol, SystemInfo.getProcessInfo) and every process under it, their proportional
   set sizes (PSS: shared pages split between processes, so the sum counts each page once) summed
   from /proc every 50 ms: before navigation, at the peak until the first page is drawn, then,
   and after 40 more pages (does paging pile up?); and the page's JS heap (DevTools'
   Performance.getMetrics).

Goal (issue 23): at 256 px the first page is drawn within `GOAL_FIRST_PAGE_S` of navigation and
Chromium's processes hold at most `GOAL_MEMORY_BYTES` (PSS summed): at their peak until then, and
after `BROWSED_PAGES` more pages.

Images are image-like, made fast: `BASES` smooth random fields (a coarse random grid enlarged
bicubically, over a vertical gradient), each used with fresh Gaussian noise (sd `NOISE_SD` grey
levels), so no two images are alike and the sprite sheets compress like noisy radiographs, not
like copies or pure noise.

Run: `python bench/review_bench.py` (needs /usr/bin/chromium and playwright).
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from radsynth.audit.review import write_screening_review
from radsynth.audit.screening import MANIFEST_COLUMNS
from radsynth.core.tables import write_table

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
GOAL_SIDE = 256
GOAL_FIRST_PAGE_S = 2.0
GOAL_MEMORY_BYTES = 1e9
PAGE_SIZE = 48
FAR_PAGE = 50
#: Pages stepped through after FAR_PAGE + 1 before the memory is read again.
BROWSED_PAGES = 40
BASES = 200
COARSE = 8
NOISE_SD = 3.0
SEED = 0
SAMPLE_S = 0.05

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


def image_like(n: int, side: int) -> np.ndarray:
    """`n` noisy images of `side` px over `BASES` distinct smooth backgrounds."""
    rng = np.random.default_rng(SEED)
    gradient = np.linspace(40.0, 200.0, side, dtype=np.float32)[:, None]
    base = []
    for _ in range(BASES):
        coarse = Image.fromarray(rng.uniform(-50.0, 50.0, (COARSE, COARSE)).astype(np.float32))
        base.append(gradient + np.asarray(coarse.resize((side, side), Image.Resampling.BICUBIC)))
    images = np.empty((n, side, side), dtype=np.uint8)
    for index in range(n):
        noise = rng.standard_normal((side, side), dtype=np.float32) * NOISE_SD
        images[index] = np.clip(np.rint(base[index % BASES] + noise), 0, 255)
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


def proc_kib(pid: int, name: str, field: str) -> int:
    """A `field:   N kB` line of /proc/<pid>/<name>, in KiB (0 for a process gone meanwhile)."""
    try:
        lines = Path(f"/proc/{pid}/{name}").read_text().splitlines()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in lines if line.startswith(f"{field}:")), 0)


def process_tree(root: int) -> list[int]:
    """`root` and every process descended from it (Chromium starts its renderers through a
    zygote, so not all are its children)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name may hold spaces and parentheses: the fields follow its last ")".
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    tree, grew = {root}, True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= found
        grew = bool(found)
    return sorted(tree)


class MemorySampler:
    """The PSS of Chromium's processes (shared pages split between them), summed, every
    `SAMPLE_S` in a thread: its peak over a stretch of browsing and its value now."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.peak = 0
        self.last = 0
        self.running = threading.Event()
        self.thread = threading.Thread(target=self.sample_until_stopped, daemon=True)

    def now(self) -> int:
        return 1024 * sum(proc_kib(pid, "smaps_rollup", "Pss") for pid in process_tree(self.root))

    def sample_until_stopped(self) -> None:
        while self.running.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(SAMPLE_S)

    def __enter__(self) -> MemorySampler:
        self.peak = self.now()
        self.running.set()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.running.clear()
        self.thread.join()
        self.last = self.now()
        self.peak = max(self.peak, self.last)


def browse(page_html: Path) -> dict[str, float]:
    """Load time; ms to the first, the FAR_PAGE-th and the next page drawn; Chromium's memory
    before navigation, at its peak until the first page is drawn, then, and after BROWSED_PAGES
    more pages; the JS heap."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            processes = browser.new_browser_cdp_session().send("SystemInfo.getProcessInfo")
            root = next(p["id"] for p in processes["processInfo"] if p["type"] == "browser")
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            devtools = page.context.new_cdp_session(page)
            devtools.send("Performance.enable")
            with MemorySampler(root) as memory:
                before = memory.peak
                page.goto(page_html.as_uri(), timeout=600_000)
                load = page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
                first = page.evaluate(UNTIL_DRAWN, ["start", 1])
            metrics = {
                m["name"]: m["value"] for m in devtools.send("Performance.getMetrics")["metrics"]
            }
            far = page.evaluate(UNTIL_DRAWN, ["page", FAR_PAGE])
            after = page.evaluate(UNTIL_DRAWN, ["page", FAR_PAGE + 1])
            for target in range(FAR_PAGE + 2, FAR_PAGE + 2 + BROWSED_PAGES):
                page.evaluate(UNTIL_DRAWN, ["page", target])
            browsed = memory.now()
        finally:
            browser.close()
    return {
        "load": load,
        "first": first,
        "far": far,
        "after": after,
        "heap": metrics["JSHeapUsedSize"],
        "empty": before,
        "peak": memory.peak,
        "at_first": memory.last,
        "browsed": browsed,
    }


def verdict(measured: float, goal: float) -> str:
    return "met" if measured <= goal else "not met"


def bench_side(side: int) -> list[str]:
    images = image_like(N_IMAGES, side)
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
    first_page_s = (times["load"] + times["first"]) / 1000
    held = max(times["peak"], times["browsed"])
    lines = [
        f"review page, {N_IMAGES} images {side}x{side}, {info['n_pages']} pages of {PAGE_SIZE}: "
        f"html {info['html_bytes'] / 1e6:.1f} MB, sprite sheets {info['sheet_bytes'] / 1e6:.1f} "
        f"MB, built in {built:.1f} s; loaded {times['load'] / 1000:.2f} s, first page "
        f"{times['first']:.0f} ms after start, page {FAR_PAGE} {times['far']:.0f} ms, page "
        f"{FAR_PAGE + 1} {times['after']:.0f} ms; Chromium's processes hold (PSS) "
        f"{times['empty'] / 1e6:.0f} MB before navigation, at most {times['peak'] / 1e6:.0f} MB "
        f"until the first page is drawn, {times['at_first'] / 1e6:.0f} MB then, "
        f"{times['browsed'] / 1e6:.0f} MB after {BROWSED_PAGES} more pages; JS heap "
        f"{times['heap'] / 1e6:.0f} MB"
    ]
    if side == GOAL_SIDE:
        lines += [
            f"review page goal, first page of {N_IMAGES} images at {side} px drawn "
            f"{first_page_s:.2f} s after navigation (goal <= {GOAL_FIRST_PAGE_S:.0f} s): "
            f"{verdict(first_page_s, GOAL_FIRST_PAGE_S)}",
            f"review page goal, Chromium's memory for it at most {held / 1e6:.0f} MB (its "
            f"processes' PSS summed, peak until the first page or after {BROWSED_PAGES} more "
            f"pages; goal <= {GOAL_MEMORY_BYTES / 1e9:.0f} GB): "
            f"{verdict(held, GOAL_MEMORY_BYTES)}",
        ]
    return lines


def run() -> list[str]:
    if not CHROMIUM.exists():
        return [f"review page: skipped, {CHROMIUM} is not installed"]
    return [line for side in SIDES for line in bench_side(side)]


if __name__ == "__main__":
    for line in run():
        print(line, flush=True)
    sys.exit(0)
