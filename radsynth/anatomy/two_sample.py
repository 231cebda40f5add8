"""A label-free check of realism: a two-sample classifier, the automated counterpart of the
clinical Turing test.

A small CNN (torchvision's ResNet-18 trunk, `weights=None`, one input channel) learns to tell
the real train images (label 0) from synthetic images (label 1); its AUROC on images it never saw
(the held-out real images and unseen synthetic ones) says how separable the two are: 0.5 =
indistinguishable, 1 = every synthetic image told apart. The interval is a stratified percentile
bootstrap of the test images (each class resampled with replacement within itself). Training is
seeded through `radsynth.core.seeds` (initial weights, and each step's balanced batch and flips):
the draws stay on the CPU, then the batch moves to `network_device()`, where the classifier
trains and scores (CUDA when present, else the CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torchvision.models import resnet18

from radsynth.anatomy.landmark_model import to_network_input
from radsynth.core.device import network_device
from radsynth.core.seeds import STREAM_INIT, STREAM_MICRO_BATCH, derived_seed, seeded_generator


@dataclass(frozen=True)
class TwoSampleResult:
    """AUROC of the classifier on unseen images, with its bootstrap interval."""

    auroc: float
    low: float
    high: float
    n_real: int
    n_synthetic: int


def classifier_network(trunk_levels: int) -> nn.Module:
    """ResNet-18 with a one-channel stem, its first `trunk_levels` stages (fewer for small images:
    at 32 px the deeper stages work on 1 x 1 maps), mean pooling and one logit (synthetic)."""
    trunk = resnet18(weights=None)
    stages = [trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4][:trunk_levels]
    return nn.Sequential(
        nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False),
        trunk.bn1,
        trunk.relu,
        trunk.maxpool,
        *stages,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64 * 2 ** (trunk_levels - 1), 1),
    )


def train_two_sample_classifier(
    real: np.ndarray,
    synthetic: np.ndarray,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    trunk_levels: int,
) -> nn.Module:
    """Fit the classifier on uint8 (N, S, S) real and synthetic images: each step draws half its
    batch from each set (seeded), flipped left-right at random, with a binary cross-entropy. The
    network is returned on `network_device()`, in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(seed, STREAM_INIT, 0))
        network = classifier_network(trunk_levels)
    device = network_device()
    network.to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate)
    real_t, synthetic_t = torch.as_tensor(real), torch.as_tensor(synthetic)
    half = max(1, batch_size // 2)
    network.train()
    for step in range(steps):
        generator = seeded_generator(seed, STREAM_MICRO_BATCH, step)
        rows_real = torch.randint(0, len(real_t), (half,), generator=generator)
        rows_synthetic = torch.randint(0, len(synthetic_t), (half,), generator=generator)
        images = to_network_input(torch.cat([real_t[rows_real], synthetic_t[rows_synthetic]]))
        flips = torch.rand(len(images), generator=generator) < 0.5
        images = torch.where(flips[:, None, None, None], images.flip(-1), images).to(device)
        targets = torch.cat([torch.zeros(half), torch.ones(half)]).to(device)
        loss = nn.functional.binary_cross_entropy_with_logits(network(images)[:, 0], targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return network.eval()


def synthetic_logits(network: nn.Module, images: np.ndarray, *, batch_size: int) -> np.ndarray:
    """The classifier's logit of "synthetic" per image, `batch_size` images at a time on the
    device the network is on."""
    device = next(network.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = to_network_input(images[start : start + batch_size], device)
            out.append(network(batch)[:, 0].cpu())
    return torch.cat(out).double().numpy() if out else np.zeros(0)


def bootstrap_auroc(
    real_scores: np.ndarray,
    synthetic_scores: np.ndarray,
    *,
    n_boot: int,
    level: float,
    seed: int,
) -> TwoSampleResult:
    """AUROC (synthetic = positive) and its stratified percentile bootstrap interval."""
    real_scores, synthetic_scores = np.asarray(real_scores), np.asarray(synthetic_scores)
    labels = np.r_[np.zeros(len(real_scores)), np.ones(len(synthetic_scores))]
    auroc = roc_auc_score(labels, np.r_[real_scores, synthetic_scores])
    rng = np.random.default_rng(seed)
    draws = [
        roc_auc_score(
            labels,
            np.r_[
                rng.choice(real_scores, len(real_scores)),
                rng.choice(synthetic_scores, len(synthetic_scores)),
            ],
        )
        for _ in range(n_boot)
    ]
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return TwoSampleResult(
        float(auroc), float(low), float(high), len(real_scores), len(synthetic_scores)
    )


def two_sample_auroc(
    real_train: np.ndarray,
    synthetic_train: np.ndarray,
    real_test: np.ndarray,
    synthetic_test: np.ndarray,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    trunk_levels: int,
    n_boot: int,
    level: float,
    inference_batch_size: int,
) -> TwoSampleResult:
    """Train on (real_train, synthetic_train), score unseen (real_test, synthetic_test),
    `inference_batch_size` images per scoring batch."""
    sides = {real_train.shape[1:], synthetic_train.shape[1:]}
    sides |= {real_test.shape[1:], synthetic_test.shape[1:]}
    if len(sides) != 1:
        raise ValueError(f"real and synthetic images must share one size, got {sorted(sides)}")
    network = train_two_sample_classifier(
        real_train,
        synthetic_train,
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        trunk_levels=trunk_levels,
    )
    return bootstrap_auroc(
        synthetic_logits(network, real_test, batch_size=inference_batch_size),
        synthetic_logits(network, synthetic_test, batch_size=inference_batch_size),
        n_boot=n_boot,
        level=level,
        seed=seed,
    )
