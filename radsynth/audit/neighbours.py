"""Cosine nearest neighbours between real and synthetic embeddings, synthetic rows in chunks.

imagededup's `find_duplicates` builds the (N+M)^2 similarity matrix of all images against all,
real-real and synthetic-synthetic pairs included. The audit needs real x synthetic only: here
`chunk_size` synthetic rows at a time are multiplied against all real rows (L2-normalised
float32, torch matmul), so memory is the normalised real embeddings (twice: the BLAS packs its
own copy) plus chunk_size x n_real similarities and their mask, whatever the number of synthetic
images (measured in bench/audit_bench.py). Rows whose best similarity is below the running k-th
best are skipped after one max per row.

Ties: pairs of equal similarity (equal float32 values as computed) are ordered by real index,
then synthetic index, both ascending; `nearest_real` takes the lowest real index. Every pair tied
with a chunk's k-th best is kept for the merge, so the order does not depend on the chunk size
(float rounding of the matmul itself may differ between chunk shapes, by about 1e-7).
"""

from __future__ import annotations

from typing import Iterator

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
        raise ValueError(f"{what} embeddings must be a non-empty 2-D array (N, D), got shape {embeddings.shape}")
    if not (np.issubdtype(embeddings.dtype, np.floating) or np.issubdtype(embeddings.dtype, np.integer)):
        raise ValueError(f"{what} embeddings must be numeric, got {embeddings.dtype}")
    return embeddings


def unit_rows(rows: np.ndarray, what: str, first: int) -> torch.Tensor:
    """Rows as float32 scaled to unit L2 norm (norms and division in float64, where a float32 square
    cannot overflow, so a non-finite norm means a non-finite value; rounded once to float32, so
    rows of one direction become equal unit rows); a non-finite or zero row fails naming its row
    number (`first` is the number of the first row given)."""
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))
    bad = np.flatnonzero(~np.isfinite(norms))
    if bad.size:
        raise ValueError(f"{what} embedding row {first + int(bad[0])} holds a non-finite value "
                         f"({bad.size} such row(s) in rows {first}..{first + len(rows) - 1})")
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ValueError(f"{what} embedding row {first + int(zero[0])} is a zero vector: "
                         f"its cosine similarity is undefined")
    return torch.from_numpy((rows / norms[:, None]).astype(np.float32))


def similarity_chunks(real: np.ndarray, synthetic: np.ndarray, chunk_size: int) -> Iterator[tuple[int, torch.Tensor]]:
    """(first synthetic row, cosine similarities (chunk, n_real)) for consecutive chunks of synthetic rows."""
    real = check_embeddings(real, "real")
    synthetic = check_embeddings(synthetic, "synthetic")
    if real.shape[1] != synthetic.shape[1]:
        raise ValueError(f"real embeddings have {real.shape[1]} dimensions, synthetic ones {synthetic.shape[1]}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    real_unit = torch.empty(real.shape, dtype=torch.float32)
    for first in range(0, len(real), chunk_size):  # in chunks too: the float64 rows are transient
        real_unit[first:first + chunk_size] = unit_rows(real[first:first + chunk_size], "real", first)
    for first in range(0, len(synthetic), chunk_size):
        yield first, unit_rows(synthetic[first:first + chunk_size], "synthetic", first) @ real_unit.T


def best_first(similarity: np.ndarray, real_index: np.ndarray, synthetic_index: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k best pairs: similarity descending, then real index, then synthetic index."""
    return np.lexsort((synthetic_index, real_index, -similarity))[:k]


def chunk_candidates(similarity: torch.Tensor, k: int, floor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(similarity, real index, row in chunk) of every pair at least as similar as the chunk's k-th
    best and as `floor` (the running k-th best: rows whose maximum is below it are skipped unread)."""
    rows = torch.nonzero(similarity.amax(dim=1) >= floor)[:, 0]
    if len(rows) == 0:
        return np.empty(0, np.float32), np.empty(0, np.int64), np.empty(0, np.int64)
    candidates = similarity if len(rows) == len(similarity) else similarity[rows]
    # the chunk's k best lie among its rows' k best; a top-k over the whole chunk would copy it
    row_best = torch.topk(candidates, min(k, candidates.shape[1]), dim=1).values.reshape(-1)
    kth = torch.topk(row_best, min(k, len(row_best))).values[-1]
    picked, cols = torch.nonzero(candidates >= max(float(kth), floor), as_tuple=True)
    return candidates[picked, cols].numpy(), cols.numpy(), rows[picked].numpy()


def top_pairs(real: np.ndarray, synthetic: np.ndarray, *, k: int, chunk_size: int) -> pd.DataFrame:
    """The k most cosine-similar (real, synthetic) pairs overall, best first (rank 1 = most similar).

    Columns rank, real_index, synthetic_index (row numbers of the inputs) and similarity (float32);
    fewer than k rows only when there are fewer than k pairs.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    similarity = np.empty(0, np.float32)
    real_index = synthetic_index = np.empty(0, np.int64)
    with torch.inference_mode():
        for first, chunk in similarity_chunks(real, synthetic, chunk_size):
            floor = float(similarity[-1]) if len(similarity) == k else -np.inf
            values, cols, rows = chunk_candidates(chunk, k, floor)
            similarity = np.concatenate([similarity, values])
            real_index = np.concatenate([real_index, cols])
            synthetic_index = np.concatenate([synthetic_index, rows + first])
            keep = best_first(similarity, real_index, synthetic_index, k)
            similarity, real_index, synthetic_index = similarity[keep], real_index[keep], synthetic_index[keep]
    return pd.DataFrame({"rank": np.arange(1, len(similarity) + 1), "real_index": real_index,
                         "synthetic_index": synthetic_index, "similarity": similarity})


def nearest_real(real: np.ndarray, synthetic: np.ndarray, *, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
    """For each synthetic row: the index of its most cosine-similar real row (lowest index on ties)
    and that similarity, as int64 and float32 arrays of length n_synthetic."""
    index = np.empty(len(check_embeddings(synthetic, "synthetic")), np.int64)
    similarity = np.empty(len(index), np.float32)
    with torch.inference_mode():
        for first, chunk in similarity_chunks(real, synthetic, chunk_size):
            best = torch.argmax(chunk, dim=1)  # documented: the first maximal value on ties
            index[first:first + len(chunk)] = best.numpy()
            similarity[first:first + len(chunk)] = chunk.gather(1, best[:, None])[:, 0].numpy()
    return index, similarity
