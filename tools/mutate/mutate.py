"""Mutation testing of radsynth's core modules (`make mutate`), through mutmut 3.

Why a driver around mutmut: mutmut reads one `[tool.mutmut]` section per project and runs one
test selection, but the goal is a score per module, earned by the test files that cover that
module only (a mutant some end-to-end test happens to notice does not count). So each module runs
in its own scratch copy of the working tree (`.mutate/<module>/`) with its own section, and the
per-module results are gathered into one report (`.mutate/report.md`, also printed). Modules run
one at a time on a shared machine can be gathered afterwards with `--collect`, which reads each
module's last results from its scratch copy instead of running it again.

`tools/mutate/modules.toml` names each module and its covering test files; `survivors.toml`
says, for each mutant the tests let through, why it is equivalent or harmless. A survivor without
a reason is reported as unexplained. Mutants run in mutmut's forkserver (torch is not fork-safe).

    .venv/bin/python tools/mutate/mutate.py [--only radsynth/data/split.py ...] [--children 2]
    .venv/bin/python tools/mutate/mutate.py --collect  # report every module's last run
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SCRATCH = REPO / ".mutate"
MUTMUT = Path(sys.executable).parent / "mutmut"
#: The share of mutants a module's tests must detect (killed or timed out).
GOAL = 0.90
#: What a scratch copy needs besides the package and the tests (workflow files some tests read).
ALSO_COPY = ["workflow/", "config/", "Snakefile"]
#: mutmut's result words, in report order; timeouts count as detected (the mutant hung a test).
DETECTED = ("killed", "timeout")
UNDETECTED = ("survived", "no tests", "suspicious", "skipped", "not checked")


@dataclass
class ModuleResult:
    module: str
    tests: list[str]
    statuses: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def counts(self) -> Counter:
        return Counter(self.statuses.values())

    @property
    def score(self) -> float:
        total = len(self.statuses)
        return sum(self.counts[s] for s in DETECTED) / total if total else float("nan")

    def undetected(self) -> list[str]:
        return sorted(name for name, status in self.statuses.items() if status not in DETECTED)


def load_modules() -> dict[str, list[str]]:
    table = tomllib.loads((HERE / "modules.toml").read_text())["modules"]
    for module, tests in table.items():
        for path in [module, *tests]:
            if not (REPO / path).is_file():
                raise SystemExit(f"tools/mutate/modules.toml: {path} does not exist")
    return table


def load_reasons() -> dict[str, str]:
    return tomllib.loads((HERE / "survivors.toml").read_text()).get("survivors", {})


def scratch_dir(module: str) -> Path:
    return SCRATCH / module.replace("/", "_").removesuffix(".py")


def scratch_copy(module: str, tests: list[str]) -> Path:
    """The working tree's files (tracked and untracked, not ignored), with a mutmut section that
    mutates `module` only and selects `tests` only."""
    target = scratch_dir(module)
    shutil.rmtree(target, ignore_errors=True)
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    section = {
        "source_paths": ["radsynth/"],
        "only_mutate": [module],
        "pytest_add_cli_args_test_selection": tests,
        "pytest_add_cli_args": ["-p", "no:xdist", "-p", "no:cacheprovider"],
        "process_isolation": "forkserver",
        "also_copy": ALSO_COPY,
    }
    with (target / "pyproject.toml").open("a") as handle:
        handle.write("\n[tool.mutmut]\n")
        for key, value in section.items():
            rendered = (
                "[" + ", ".join(f'"{v}"' for v in value) + "]"
                if isinstance(value, list)
                else f'"{value}"'
            )
            handle.write(f"{key} = {rendered}\n")
    return target


RESULT_LINE = re.compile(r"^\s*(\S+__mutmut_\d+): (.+)$")


def run_module(module: str, tests: list[str], children: int) -> ModuleResult:
    workdir = scratch_copy(module, tests)
    started = time.monotonic()
    log = workdir / "mutmut-run.log"
    with log.open("w") as handle:
        subprocess.run(
            [str(MUTMUT), "run", "--max-children", str(children)],
            cwd=workdir,
            stdout=handle,
            stderr=subprocess.STDOUT,
            check=False,
        )
    return ModuleResult(module, tests, mutant_statuses(module), time.monotonic() - started)


def mutant_statuses(module: str) -> dict[str, str]:
    """mutmut's word for each mutant of `module`'s last run in its scratch copy."""
    workdir = scratch_dir(module)
    listing = subprocess.run(
        [str(MUTMUT), "results", "--all", "true"], cwd=workdir, capture_output=True, text=True
    ).stdout
    statuses = {m[1]: m[2].strip() for m in map(RESULT_LINE.match, listing.splitlines()) if m}
    if not statuses:
        raise SystemExit(f"{module}: mutmut has no results; see {workdir / 'mutmut-run.log'}")
    return statuses


def collect_module(module: str) -> ModuleResult:
    """`module`'s last run, read back from its scratch copy: the test files that run selected
    (modules.toml may have changed since), and its duration from the scratch configuration's
    writing (the run's start) to the run log's last write (its end)."""
    workdir = scratch_dir(module)
    log = workdir / "mutmut-run.log"
    if not log.is_file():
        raise SystemExit(f"{module}: never run (no {log}); run it with --only {module}")
    configuration = workdir / "pyproject.toml"
    tests = tomllib.loads(configuration.read_text())["tool"]["mutmut"][
        "pytest_add_cli_args_test_selection"
    ]
    seconds = log.stat().st_mtime - configuration.stat().st_mtime
    return ModuleResult(module, tests, mutant_statuses(module), seconds)


def mutant_diff(module: str, name: str) -> str:
    workdir = scratch_dir(module)
    shown = subprocess.run([str(MUTMUT), "show", name], cwd=workdir, capture_output=True, text=True)
    lines = [
        line
        for line in shown.stdout.splitlines()
        if line.startswith(("-", "+")) and not line.startswith(("---", "+++"))
    ]
    return "\n".join(lines)


def report(results: list[ModuleResult], reasons: dict[str, str]) -> str:
    header = (
        "| module | mutants | killed | timeout | survived | no tests | other | detected | goal |"
    )
    rows = [
        "# Mutation testing (mutmut 3.8.1)",
        "",
        f"Goal: at least {GOAL:.0%} of each module's mutants detected (killed or timed out) by the "
        "test files listed for it in tools/mutate/modules.toml.",
        "",
        header,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for result in results:
        c = result.counts
        other = len(result.statuses) - sum(
            c[s] for s in ("killed", "timeout", "survived", "no tests")
        )
        verdict = "met" if result.score >= GOAL else "not met"
        rows.append(
            f"| {result.module} | {len(result.statuses)} | {c['killed']} | {c['timeout']} | "
            f"{c['survived']} | {c['no tests']} | {other} | {result.score:.1%} | {verdict} |"
        )
    for result in results:
        undetected = result.undetected()
        if not undetected:
            continue
        rows += [
            "",
            f"## {result.module}: {len(undetected)} undetected ({result.seconds:.0f} s)",
            "",
        ]
        rows.append(f"Tests: {', '.join(result.tests)}")
        for name in undetected:
            reason = reasons.get(name, "UNEXPLAINED")
            rows += [
                "",
                f"- `{name}` ({result.statuses[name]}): {reason}",
                "",
                "```diff",
                mutant_diff(result.module, name),
                "```",
            ]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="module paths to run (default: every module)")
    parser.add_argument("--children", type=int, default=2, help="mutants tested at once")
    parser.add_argument(
        "--report", type=Path, default=SCRATCH / "report.md", help="where the report is written"
    )
    parser.add_argument(
        "--collect",
        action="store_true",
        help="report each module's last run from its scratch copy instead of running it",
    )
    args = parser.parse_args(argv)
    modules = load_modules()
    chosen = args.only or list(modules)
    unknown = [m for m in chosen if m not in modules]
    if unknown:
        parser.error(f"not in tools/mutate/modules.toml: {', '.join(unknown)}")
    results = []
    for module in chosen:
        if args.collect:
            results.append(collect_module(module))
            continue
        print(f"mutating {module} with {len(modules[module])} test file(s) ...", flush=True)
        results.append(run_module(module, modules[module], args.children))
        print(f"  {results[-1].score:.1%} detected of {len(results[-1].statuses)}", flush=True)
    text = report(results, load_reasons())
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
