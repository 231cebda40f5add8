"""The memorization audit's pairs table as the review steps read it, and the merge of the
reviewers' verdict files (the pairs review page's exports) into pair_verdicts.csv and
pair_disagreements.csv.

Verdict files are read by `radsynth.audit.reviewer_files`, as the reviewed screening manifests
are: the same parsing, messages and rule (one verdict per reviewer and pair; see there why). No
torch: the merge rule runs in an env without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from radsynth.audit.reviewer_files import ReviewerFileFormat, disputed, read_reviewer_files
from radsynth.core.tables import read_table

#: A pair's verdict, keys 1, 2 and 3 on the page.
VERDICTS = ("memorized", "similar but distinct", "unrelated")
MEMORIZED = VERDICTS[0]
#: `consensus` of a pair whose reviewers gave different verdicts, and of one nobody judged.
DISAGREEMENT = "disagreement"
UNREVIEWED = "unreviewed"
#: The pairs page's export, one row per pair in rank order.
VERDICT_COLUMNS = ("rank", "real_id", "synthetic_id", "verdict", "reviewer", "note")
PAIRS_COLUMNS = ("rank", "real_id", "synthetic_id", "similarity", "patch_distance")
#: A verdict file as the merge reads it. Its rank is not read: pairs are named by their ids.
VERDICT_FILE = ReviewerFileFormat(
    item="pair",
    item_columns=("real_id", "synthetic_id"),
    answer_column="verdict",
    answers=VERDICTS,
    note_column="note",
    expected="a verdict file is the CSV the memorization review page exports",
)
#: One reviewer's verdict on one pair, as the merge reads it (rank from pairs.csv).
VERDICT_RECORD_COLUMNS = ("rank", *VERDICT_FILE.record_columns)


def read_pairs(pairs_csv: Path) -> pd.DataFrame:
    """The memorization audit's pairs.csv, ids as text; each real x synthetic pair once."""
    pairs = read_table(Path(pairs_csv), dtype={"real_id": str, "synthetic_id": str})
    missing = [column for column in PAIRS_COLUMNS if column not in pairs.columns]
    if missing:
        raise ValueError(
            f"{pairs_csv}: not the memorization audit's pairs table, missing column(s) "
            f"{', '.join(missing)}"
        )
    repeated = pairs.duplicated(["real_id", "synthetic_id"])
    if repeated.any():
        first = pairs[repeated].iloc[0]
        raise ValueError(
            f"{pairs_csv}: pair {first['real_id']!r} x {first['synthetic_id']!r} is listed twice"
        )
    return pairs


def consensus_of(verdicts: set[str]) -> str:
    """The pair's verdict when every reviewer who judged it agrees."""
    if not verdicts:
        return UNREVIEWED
    return next(iter(verdicts)) if len(verdicts) == 1 else DISAGREEMENT


def merge_pair_verdicts(
    pairs_csv: Path, verdict_files: Sequence[Path]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(merged, disagreements). merged: pairs.csv plus verdict_<reviewer> per reviewer (blank where
    that reviewer gave none), n_verdicts, consensus (the verdict all who judged the pair agree on,
    DISAGREEMENT, or UNREVIEWED), any_memorized and notes ('reviewer: note' joined by '; ').
    disagreements: every verdict on a pair reviewers judged differently (VERDICT_RECORD_COLUMNS),
    by rank and reviewer. A verdict file's rank is not read: pairs are named by their ids."""
    pairs = read_pairs(Path(pairs_csv)).reset_index(drop=True)
    keys = list(zip(pairs["real_id"], pairs["synthetic_id"]))
    ranks = dict(zip(keys, pairs["rank"].astype(int)))
    verdicts = read_reviewer_files(verdict_files, VERDICT_FILE, ranks, str(pairs_csv))
    verdicts.insert(0, "rank", [ranks[key] for key in VERDICT_FILE.keys(verdicts)])
    judged = {
        key: group for key, group in verdicts.groupby(["real_id", "synthetic_id"], sort=False)
    }
    groups = [judged.get(key, verdicts.iloc[:0]) for key in keys]
    merged = pairs.copy()
    for reviewer in sorted(set(verdicts["reviewer"])):
        own = verdicts[verdicts["reviewer"] == reviewer]
        given = dict(zip(zip(own["real_id"], own["synthetic_id"]), own["verdict"]))
        merged[f"verdict_{reviewer}"] = [given.get(key, "") for key in keys]
    merged["n_verdicts"] = [len(group) for group in groups]
    merged["consensus"] = [consensus_of(set(group["verdict"])) for group in groups]
    merged["any_memorized"] = [bool((group["verdict"] == MEMORIZED).any()) for group in groups]
    merged["notes"] = [
        "; ".join(f"{who}: {note}" for who, note in zip(group["reviewer"], group["note"]) if note)
        for group in groups
    ]
    split = disputed(verdicts, VERDICT_FILE)
    disagreements = verdicts.loc[[key in split for key in VERDICT_FILE.keys(verdicts)]]
    return merged, disagreements.sort_values(["rank", "reviewer", "file", "line"]).reset_index(
        drop=True
    )
