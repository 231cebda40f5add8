"""The centred moving average of losses: the loss figure smooths the per-step training loss with
it, the checkpoint selection the per-checkpoint validation loss (its convergence window)."""

from __future__ import annotations

import pandas as pd


def moving_average(values: pd.Series, window: int) -> pd.Series:
    """Centred moving average over `window` rows, shrinking at the ends (no NaN edges).

    Centred so that the smoothed minimum sits where the raw minimum is, not `window`/2 later.
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"moving-average window must be a positive integer, got {window!r}")
    return values.rolling(window, center=True, min_periods=1).mean()
