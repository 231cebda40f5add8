"""Cosine nearest neighbours between real and synthetic embeddings, synthetic rows in chunks.

imagededup's `find_duplicates` builds the (N+M)^2 similarity matrix of all images against all,
real-real and synthetic-synthetic pairs included. The audit needs real x synthetic only: here
`chunk_size` synthetic rows at a time are multiplied against all real rows (L2-normalised
float32, torch matmul), so memory is the normalised real embeddings (twice: the BLAS packs its
own copy) plus chunk_size x n_real similarities and their mask, whatever the number of synthetic
images (measured in bench/audit_bench.py).

`top_pairs` is exact but skips most of the matmul once it holds k pairs (bound pruning, a
hand-written step: neither imagededup nor torch offers a global top-k of a product that never
forms the product). With the coordinates in order of the real rows' energy, a pair's similarity
is head + tail, where head is the dot product over the leading quarter of coordinates and, by
Cauchy-Schwarz, tail <= |real tail| |synthetic tail|. Only pairs whose head plus that bound
reaches the running k-th best (less the float32 rounding margin) get their tail computed. Near
copies make the k-th best high and such pairs few; where the bound prunes little (no pair
stands out) a chunk falls back to the full product, so the cost never exceeds the plain search
by more than the first pass (a quarter of it).

Every pair that is kept gets its similarity recomputed in float64 from the float32 unit rows (and
rounded to float32), so a pair's value does not depend on the chunk, the path or its position.
Ties: pairs of equal similarity are ordered by real index, then synthetic index, both
ascending; `nearest_real` takes the lowest real index.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

#: Synthetic rows per matmul when the caller has no reason to choose: 1024 x n_real float32
#: similarities, 20 MB against the paper's 4,963 real images, 0.4 GB against 100,000.
CHUNK_SIZE = 1024


def check_embeddings(embeddings: np.ndarray, what: str) -> np.ndarray:
    """A non-empty 2-D numeric array, or an error naming `what`; values are checked per chunk."""
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or len(embeddings) == 0 or embeddings.shape[1] == 0:
        raise ValueError(
            f"{what} embeddings must be a non-empty 2-D array (N, D), got shape {embeddings.shape}"
        )
    if not (
        np.issubdtype(embeddings.dtype, np.floating) or np.issubdtype(embeddings.dtype, np.integer)
    ):
        raise ValueError(f"{what} embeddings must be numeric, got {embeddings.dtype}")
    return embeddings


def unit_rows(rows: np.ndarray, what: str, first: int) -> torch.Tensor:
    """Rows as float32 scaled to unit L2 norm (norms and division in float64, where a float32 square
    cannot overflow, so a non-finite norm means a non-finite value; rounded once to float32, so
    rows of one direction become equal unit rows); a non-finite or zero row fails naming its row
    number (`first` is the number of the first row given)."""
    rows = torch.from_numpy(np.asarray(rows, dtype=np.float32)).double()
    norms = torch.linalg.vector_norm(rows, dim=1)
    bad = torch.nonzero(~torch.isfinite(norms))[:, 0]
    if len(bad):
        raise ValueError(
            f"{what} embedding row {first + int(bad[0])} holds a non-finite value "
            f"({len(bad)} such row(s) in rows {first}..{first + len(rows) - 1})"
        )
    zero = torch.nonzero(norms == 0)[:, 0]
    if len(zero):
        raise ValueError(
            f"{what} embedding row {first + int(zero[0])} is a zero vector: "
            f"its cosine similarity is undefined"
        )
    return rows.div_(norms[:, None]).float()


def unit_matrix(embeddings: np.ndarray, what: str, chunk_size: int) -> torch.Tensor:
    """All rows of `embeddings` as unit float32 rows, normalised in chunks (the float64 rows are
    transient)."""
    unit = torch.empty(embeddings.shape, dtype=torch.float32)
    for first in range(0, len(embeddings), chunk_size):
        unit[first : first + chunk_size] = unit_rows(
            embeddings[first : first + chunk_size], what, first
        )
    return unit


def checked_pair(
    real: np.ndarray, synthetic: np.ndarray, chunk_size: int
) -> tuple[np.ndarray, np.ndarray]:
    real = check_embeddings(real, "real")
    synthetic = check_embeddings(synthetic, "synthetic")
    if real.shape[1] != synthetic.shape[1]:
        raise ValueError(
            f"real embeddings have {real.shape[1]} dimensions, synthetic ones {synthetic.shape[1]}"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    return real, synthetic


def similarity_chunks(
    real: np.ndarray, synthetic: np.ndarray, chunk_size: int
) -> Iterator[tuple[int, torch.Tensor]]:
    """(first synthetic row, cosine similarities (chunk, n_real)) for consecutive chunks of
    synthetic rows."""
    real, synthetic = checked_pair(real, synthetic, chunk_size)
    real_unit = unit_matrix(real, "real", chunk_size)
    for first in range(0, len(synthetic), chunk_size):
        yield (
            first,
            unit_rows(synthetic[first : first + chunk_size], "synthetic", first) @ real_unit.T,
        )


def best_first(
    similarity: np.ndarray, real_index: np.ndarray, synthetic_index: np.ndarray, k: int
) -> np.ndarray:
    """Positions of the k best pairs: similarity descending, then real index, then synthetic
    index."""
    return np.lexsort((synthetic_index, real_index, -similarity))[:k]


#: The share of coordinates in the first pass: a quarter costs a quarter of the matmul and leaves
#: three quarters of a random unit vector's energy to the bound (|tail|^2 about 3/4 each).
HEAD_FRACTION = 0.25
#: A chunk whose bound keeps more than this share of its pairs gets its full product instead: the
#: tail of a gathered pair costs far more than the same pair inside a matmul.
GATHER_LIMIT = 1 / 32


def rounding_margin(dimensions: int) -> float:
    """Twice the float32 error bound of a unit-vector dot product, gamma_D = D u / (1 - D u), u =
    2^-24."""
    unit_roundoff = 2.0**-24
    return 2 * dimensions * unit_roundoff / (1 - dimensions * unit_roundoff)


@dataclass(frozen=True)
class _SplitRows:
    """Unit rows, and their leading coordinates (in the real rows' energy order) followed by their
    tail's norm: one matmul of two such matrices gives every pair's head + |tail| |tail| bound."""

    unit: torch.Tensor
    head_and_tail_norm: torch.Tensor


def _split(unit: torch.Tensor, order: torch.Tensor, head: int) -> _SplitRows:
    """|tail|^2 = |row|^2 - |head|^2 in float64 (no column gather of the tail)."""
    leading = unit.index_select(1, order[:head])
    tail_square = unit.double().square().sum(dim=1) - leading.double().square().sum(dim=1)
    tail_norm = tail_square.clamp_(min=0).sqrt_().float()
    return _SplitRows(unit, torch.cat([leading, tail_norm[:, None]], dim=1))


def _dense_candidates(
    similarity: torch.Tensor, k: int, floor: float, margin: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) of every pair within `margin` of the chunk's k-th best or above `floor` less
    margin,
    whichever is higher (rows whose maximum is below it are skipped unread)."""
    rows = torch.nonzero(similarity.amax(dim=1) >= floor - margin)[:, 0]
    if len(rows) == 0:
        return rows, rows
    candidates = similarity if len(rows) == len(similarity) else similarity[rows]
    # the chunk's k best lie among its rows' k best; a top-k over the whole chunk would copy it
    row_best = torch.topk(candidates, min(k, candidates.shape[1]), dim=1).values.reshape(-1)
    kth = float(torch.topk(row_best, min(k, len(row_best))).values[-1])
    picked, cols = torch.nonzero(candidates >= max(kth, floor) - margin, as_tuple=True)
    return rows[picked], cols


def _chunk_candidates(
    synthetic: _SplitRows, real: _SplitRows, k: int, floor: float, margin: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) pairs of a chunk that may reach the running k-th best `floor`: a superset of
    them."""
    if np.isfinite(floor):
        bound = synthetic.head_and_tail_norm @ real.head_and_tail_norm.T
        rows = torch.nonzero(bound.amax(dim=1) >= floor - margin)[:, 0]
        if len(rows) == 0:
            return rows, rows
        reach = bound[rows] >= floor - margin
        if int(reach.sum()) <= GATHER_LIMIT * bound.numel():
            picked, cols = torch.nonzero(reach, as_tuple=True)
            return rows[picked], cols
    return _dense_candidates(synthetic.unit @ real.unit.T, k, floor, margin)


def _exact_similarity(
    synthetic: torch.Tensor, real: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> np.ndarray:
    """float64 dot products of the given float32 unit rows, rounded to float32."""
    return torch.einsum("ij,ij->i", synthetic[rows].double(), real[cols].double()).float().numpy()


def top_pairs(real: np.ndarray, synthetic: np.ndarray, *, k: int, chunk_size: int) -> pd.DataFrame:
    """The k most cosine-similar (real, synthetic) pairs overall, best first (rank 1 = most
    similar).

    Columns rank, real_index, synthetic_index (row numbers of the inputs) and similarity (float32);
    fewer than k rows only when there are fewer than k pairs.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    real, synthetic = checked_pair(real, synthetic, chunk_size)
    similarity = np.empty(0, np.float32)
    real_index = synthetic_index = np.empty(0, np.int64)
    with torch.inference_mode():
        real_unit = unit_matrix(real, "real", chunk_size)
        order = torch.argsort(real_unit.square().sum(dim=0), descending=True, stable=True)
        head = max(1, round(HEAD_FRACTION * real.shape[1]))
        real_split, margin = _split(real_unit, order, head), rounding_margin(real.shape[1])
        for first in range(0, len(synthetic), chunk_size):
            synthetic_unit = unit_rows(synthetic[first : first + chunk_size], "synthetic", first)
            floor = float(similarity[-1]) if len(similarity) == k else -np.inf
            rows, cols = _chunk_candidates(
                _split(synthetic_unit, order, head), real_split, k, floor, margin
            )
            similarity = np.concatenate(
                [similarity, _exact_similarity(synthetic_unit, real_unit, rows, cols)]
            )
            real_index = np.concatenate([real_index, cols.numpy()])
            synthetic_index = np.concatenate([synthetic_index, rows.numpy() + first])
            keep = best_first(similarity, real_index, synthetic_index, k)
            similarity, real_index, synthetic_index = (
                similarity[keep],
                real_index[keep],
                synthetic_index[keep],
            )
    return pd.DataFrame(
        {
            "rank": np.arange(1, len(similarity) + 1),
            "real_index": real_index,
            "synthetic_index": synthetic_index,
            "similarity": similarity,
        }
    )


def nearest_real(
    real: np.ndarray, synthetic: np.ndarray, *, chunk_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each synthetic row: the index of its most cosine-similar real row (lowest index on ties)
    and that similarity, as int64 and float32 arrays of length n_synthetic."""
    index = np.empty(len(check_embeddings(synthetic, "synthetic")), np.int64)
    similarity = np.empty(len(index), np.float32)
    with torch.inference_mode():
        for first, chunk in similarity_chunks(real, synthetic, chunk_size):
            best = torch.argmax(chunk, dim=1)  # documented: the first maximal value on ties
            index[first : first + len(chunk)] = best.numpy()
            similarity[first : first + len(chunk)] = chunk.gather(1, best[:, None])[:, 0].numpy()
    return index, similarity
