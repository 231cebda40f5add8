"""Anatomical fidelity: how far the geometry of a synthetic set lies from the held-out real
images', and the landmark model's encoder as a radiograph-trained feature extractor.

- Each numeric geometry measure (C2-C7 angle, C3-C7 body heights and depths): the Wasserstein-1
  distance between the two sets' values (scipy), in the measure's unit, with a percentile
  bootstrap interval (both sets resampled with replacement, seeded). Resampling adds each set's
  sampling noise to the distance, so the interval sits above W1 (it need not contain it): it
  says how W1 scatters at these set sizes, and is read against the real-vs-real floor's,
  computed the same way at the same size.
- Curvature classes: each set's shares and a chi-square test of independence on the 2 x classes
  counts (scipy's chi2_contingency; classes absent from both sets are left out).
- Landmark-feature Frechet distance: `LandmarkEncoderFeatures` is a `core.features`
  FeatureExtractor (named, the model file's sha256 as its weights), so the evaluate stage's FID
  machinery computes FD on its features exactly as it does on Inception's.
- The real-vs-real floor: `real_halves` cuts the real images into two disjoint seeded halves of
  the synthetic sets' size; the same distances between them are what real data scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from scipy.stats import chi2_contingency, wasserstein_distance

from radsynth.anatomy.landmark_model import LandmarkModel, load_landmark_model, to_network_input
from radsynth.anatomy.tables import CURVATURE_CLASSES, CURVATURE_MEASURE, FIDELITY_COLUMNS
from radsynth.core.features import BILINEAR, ExtractorDescription, FeatureExtractor
from radsynth.core.figures import save_figure
from radsynth.core.provenance import file_sha256
from radsynth.core.tables import write_table


def numeric_measures(geometry: pd.DataFrame) -> list[str]:
    """The geometry table's numeric columns, in its order."""
    return [c for c in geometry.columns if c != CURVATURE_MEASURE]


def bootstrap_w1(
    reference: np.ndarray, compared: np.ndarray, *, n_boot: int, level: float, seed: int
) -> tuple[float, float, float]:
    """W1 of two samples (NaNs left out) and its percentile bootstrap interval at `level`."""
    reference = np.asarray(reference, np.float64)
    compared = np.asarray(compared, np.float64)
    reference, compared = reference[np.isfinite(reference)], compared[np.isfinite(compared)]
    if len(reference) == 0 or len(compared) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = np.array(
        [
            wasserstein_distance(
                rng.choice(reference, len(reference)), rng.choice(compared, len(compared))
            )
            for _ in range(n_boot)
        ]
    )
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return wasserstein_distance(reference, compared), float(low), float(high)


def curvature_comparison(reference: Sequence[str], compared: Sequence[str]) -> dict[str, float]:
    """Shares of each curvature class in both sets and the chi-square test of their counts
    (NaN when fewer than two classes occur: nothing to test). Unknown classes ("") are left
    out."""
    counts = np.array(
        [
            [int(np.sum(np.asarray(values, dtype=object) == name)) for name in CURVATURE_CLASSES]
            for values in (reference, compared)
        ]
    )
    row = {
        f"share_{name}_{side}": counts[s, k] / max(counts[s].sum(), 1)
        for k, name in enumerate(CURVATURE_CLASSES)
        for s, side in enumerate(("reference", "compared"))
    }
    present = counts.sum(axis=0) > 0
    if present.sum() < 2 or (counts.sum(axis=1) == 0).any():
        return {**row, "chi2": float("nan"), "chi2_dof": float("nan"), "chi2_p": float("nan")}
    test = chi2_contingency(counts[:, present])
    return {
        **row,
        "chi2": float(test.statistic),
        "chi2_dof": float(test.dof),
        "chi2_p": float(test.pvalue),
    }


def geometry_distances(
    reference: pd.DataFrame,
    compared: pd.DataFrame,
    *,
    n_boot: int,
    level: float,
    seed: int,
) -> pd.DataFrame:
    """One row per measure: W1 with its bootstrap interval for each numeric measure, then the
    curvature-class shares and chi-square test (columns of `FIDELITY_COLUMNS` minus set/step)."""
    missing = sorted(set(reference.columns) ^ set(compared.columns))
    if missing:
        raise ValueError(f"the geometry tables differ in columns {missing}")
    rows = []
    for number, measure in enumerate(numeric_measures(reference)):
        w1, low, high = bootstrap_w1(
            reference[measure].to_numpy(),
            compared[measure].to_numpy(),
            n_boot=n_boot,
            level=level,
            seed=seed + number,
        )
        rows.append({"measure": measure, "w1": w1, "w1_low": low, "w1_high": high})
    rows.append(
        {
            "measure": CURVATURE_MEASURE,
            **curvature_comparison(reference[CURVATURE_MEASURE], compared[CURVATURE_MEASURE]),
        }
    )
    frame = pd.DataFrame(rows)
    frame.insert(1, "n_reference", len(reference))
    frame.insert(2, "n_compared", len(compared))
    return frame.reindex(columns=[c for c in FIDELITY_COLUMNS if c not in ("set", "step")])


def real_halves(n_real: int, half_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint sorted index sets of `half_size` real images each, drawn with `seed`: the
    real-vs-real floor at the synthetic sets' size."""
    if 2 * half_size > n_real:
        raise ValueError(
            f"the real-vs-real floor needs 2 x {half_size} images (the synthetic set size) but "
            f"there are {n_real} real images; lower the set size or use more real images"
        )
    order = np.random.default_rng(seed).permutation(n_real)
    return np.sort(order[:half_size]), np.sort(order[half_size : 2 * half_size])


def write_fidelity_table(
    rows: Mapping[tuple[str, int | None], pd.DataFrame],
    out_csv: Path,
    *,
    provenance: Mapping[str, str],
) -> pd.DataFrame:
    """Write the distances of each (set name, step) (step None: not a checkpoint, e.g. the
    real-vs-real floor) as one table; returns it."""
    frames = [frame.assign(set=name, step=step) for (name, step), frame in rows.items()]
    table = pd.concat(frames, ignore_index=True).reindex(columns=list(FIDELITY_COLUMNS))
    table["step"] = table["step"].astype("Int64")
    write_table(table, out_csv, provenance=provenance)
    return table


def plot_fidelity_against_step(
    table: pd.DataFrame,
    out_png: Path,
    *,
    measures: Sequence[str],
    provenance: Mapping[str, str],
    title: str,
    floor_set: str | None = None,
    fid: pd.DataFrame | None = None,
    fid_floor: Mapping[str, float] | None = None,
) -> Path:
    """One panel per measure: W1 (with its interval) of each set against step, one series per
    set name, the real-vs-real floor (rows of `floor_set`) as a band; and, given `fid` (columns
    step, fid, optionally landmark_fd), the FID curve in a last panel beside them (the paper's
    Figure 2), the landmark-feature FD on its right axis, `fid_floor`'s values as dashed lines."""
    panels = len(measures) + (fid is not None)
    figure = Figure(figsize=(3.2 * panels, 3.4), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, panels, sharex=True))
    checkpoints = table[table["step"].notna()].sort_values("step")
    for ax, measure in zip(axes, measures, strict=False):
        for name, rows in checkpoints[checkpoints["measure"] == measure].groupby("set", sort=True):
            ax.errorbar(
                rows["step"].to_numpy(dtype=float),
                rows["w1"],
                yerr=[rows["w1"] - rows["w1_low"], rows["w1_high"] - rows["w1"]],
                fmt="o-",
                capsize=3,
                markersize=4,
                label=f"{name} set vs held-out real",
            )
        if floor_set is not None:
            floor = table[(table["set"] == floor_set) & (table["measure"] == measure)]
            if len(floor):
                ax.axhspan(
                    floor["w1_low"].iloc[0],
                    floor["w1_high"].iloc[0],
                    color="0.85",
                    label="real vs real (interval)",
                )
                ax.axhline(floor["w1"].iloc[0], color="0.5", linestyle="--", linewidth=1)
        ax.set_title(measure, fontsize=9)
        ax.set_xlabel("training step")
        ax.set_ylabel("Wasserstein-1 (lower is closer)")
    axes[0].legend(fontsize=7)
    if fid is not None:
        _plot_fid_panel(axes[-1], fid, fid_floor or {})
    figure.suptitle(title, fontsize=10)
    return save_figure(
        figure,
        out_png,
        title=title,
        provenance=provenance,
        description=f"{len(checkpoints['step'].unique())} checkpoints, measures "
        + ", ".join(measures),
    )


def _plot_fid_panel(ax, fid: pd.DataFrame, floor: Mapping[str, float]) -> None:
    """Inception FID (left axis) and landmark-feature FD (right axis) against step."""
    ax.plot(fid["step"], fid["fid"], "s-", color="tab:red", markersize=4, label="Inception FID")
    if "fid" in floor:
        ax.axhline(floor["fid"], color="tab:red", linestyle="--", linewidth=1)
    ax.set_title("FID (dashed: real vs real)", fontsize=9)
    ax.set_xlabel("training step")
    ax.set_ylabel("Inception FID (lower is better)")
    handles = ax.get_legend_handles_labels()[0]
    if "landmark_fd" in fid:
        right = ax.twinx()
        right.plot(
            fid["step"],
            fid["landmark_fd"],
            "^-",
            color="tab:purple",
            markersize=4,
            label="landmark-feature FD",
        )
        if "landmark_fd" in floor:
            right.axhline(floor["landmark_fd"], color="tab:purple", linestyle="--", linewidth=1)
        right.set_ylabel("landmark-feature FD")
        handles += right.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=7)


#: The channel rule and value scaling of the landmark network's input.
ONE_CHANNEL = "gray, one channel"
LANDMARK_SCALING = "float32 x / 127.5 - 1"


class LandmarkEncoderFeatures(FeatureExtractor):
    """The landmark model's trunk as a feature extractor: each ResNet stage's output averaged
    over space and concatenated (64 + 128 + ... features). Images of another size are resized
    (bilinear, antialiased) to the size the model was trained at. It runs on the device its
    images are on (`extract_features` moves both; the anatomy stage asks `network_device()`)."""

    def __init__(self, model: LandmarkModel, description: ExtractorDescription) -> None:
        super().__init__(description)
        self.net = model.net.eval()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = to_network_input(images)
        size = self.description.input_size
        if x.shape[-2:] != (size, size):
            x = torch.nn.functional.interpolate(
                x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
        current, pooled = self.net.stem(x), []
        for stage in self.net.stages:
            current = stage(current)
            pooled.append(current.mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1)


def landmark_feature_extractor(model_path: Path) -> LandmarkEncoderFeatures:
    """The encoder of the landmark model file at `model_path`, named and hashed like every
    extractor (its weights field is the file's sha256)."""
    model_path = Path(model_path)
    model = load_landmark_model(model_path)
    channels = sum(stage[-1].conv2.out_channels for stage in model.net.stages)
    description = ExtractorDescription(
        name=f"landmark-encoder (ResNet-18 trunk, {len(model.net.stages)} stages, mean-pooled)",
        weights=file_sha256(model_path),
        input_size=model.architecture.image_size,
        resize=BILINEAR,
        antialias=True,
        channel_rule=ONE_CHANNEL,
        scaling=LANDMARK_SCALING,
        num_features=channels,
    )
    return LandmarkEncoderFeatures(model, description)
