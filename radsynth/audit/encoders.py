"""Image encoders of the memorization audit, run through imagededup's `CNN` as the paper did.

The paper embedded every real and synthetic image with imagededup's ViT: torchvision's
`vit_b_16` with the SWAG end-to-end weights (384 px input), the mean of the final encoder
outputs as a 768-d embedding. imagededup downloads those weights itself; here they are read from
a file (`VIT_WEIGHTS`, placed by hand) and handed to imagededup as a `CustomModel` whose module
is imagededup's own `ViT` class, so its forward and transform are imagededup's, unchanged.

No ViT weights are reachable on these machines. The fallback is the offline InceptionV3 of the
FID stage (`radsynth.core.features.offline_inception`), also run through imagededup as a
`CustomModel`; its embeddings are not the paper's, and every output names the encoder that made
it through an `EncoderDescription`.

imagededup's `CNN` never calls `.eval()` on a custom model, and encodes single images without
`torch.no_grad()`: each model is put in eval mode here, and `encode` runs in inference mode.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from imagededup.methods import CNN
from imagededup.utils.models import CustomModel, ViT
from PIL import Image
from torch import nn
from torchvision.models import vit_b_16
from torchvision.transforms import transforms
from tqdm import tqdm

from radsynth.core.features import FeatureExtractor, offline_inception, random_cnn
from radsynth.core.provenance import file_sha256

#: Where `radsynth audit --encoder vit` looks for the ViT weights: torchvision's file of
#: `ViT_B_16_Weights.IMAGENET1K_SWAG_E2E_V1`, the weights imagededup's ViT downloads.
VIT_WEIGHTS = Path("resources/weights/vit_b_16_swag-9ac1b537.pth")
#: torch.hub names weight files after the first hex digits of their sha256: checked before
#: unpickling.
VIT_SHA256_PREFIX = "9ac1b537"
#: Input side of the SWAG end-to-end weights (their positional embeddings are for 384 px).
VIT_IMAGE_SIZE = 384
#: Width of imagededup's ViT embedding (vit_b_16's hidden dimension).
VIT_EMBEDDING = 768
#: Images per temporary folder of `encode` (a multiple of imagededup's batch of 64): bounds the
#: disk the PNG files take (about 30 MB for 256 px radiographs), not the result.
ENCODE_BLOCK = 512
#: PIL RGB image -> float32 (3, H, W) in [0, 1]: the transform of the encoders wrapping a
#: radsynth feature extractor (which resizes and scales by itself, as in the FID stage).
UNIT_TENSOR = transforms.ToTensor()


@dataclass(frozen=True)
class EncoderDescription:
    """Which encoder made an embedding; written into every audit output."""

    name: str
    weights: str  # sha256 of the weights file, or RANDOM_INIT
    embedding_size: int

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """sha256 of the description: the key of cached embeddings."""
        return hashlib.sha256(
            json.dumps(self.as_dict(), sort_keys=True).encode("utf-8")
        ).hexdigest()


@dataclass(frozen=True)
class AuditEncoder:
    """An imagededup `CNN` built on a `CustomModel`, with the description of its model."""

    cnn: CNN
    description: EncoderDescription


class StateDictViT(ViT):
    """imagededup's `ViT` with its weights read from a state-dict file instead of downloaded.

    Only `__init__` differs: it sets the attributes imagededup's `__init__` sets (its zero class
    token included: imagededup replaces the trained one with zeros) on a `vit_b_16` loaded from
    `state_dict`, so `forward` is imagededup's own.
    """

    def __init__(self, state_dict: dict[str, torch.Tensor]) -> None:
        nn.Module.__init__(self)
        self.model = vit_b_16(weights=None, image_size=VIT_IMAGE_SIZE)
        self.model.load_state_dict(state_dict)
        self.hidden_dim = VIT_EMBEDDING
        self.patch_size = 16
        self.image_size = VIT_IMAGE_SIZE
        self.class_token = nn.Parameter(torch.zeros(1, 1, self.hidden_dim))


class GrayExtractorModel(nn.Module):
    """A radsynth feature extractor as an imagededup model.

    imagededup hands the model what `UNIT_TENSOR` makes of the RGB image it built from a gray one:
    (B, 3, H, W) float32 in [0, 1] with three equal channels. They are turned back into the uint8
    gray images (exactly: v / 255 * 255 rounds to v) that the extractor takes, which then resizes
    and scales them as it does for FID (the Inception: 299 px, (x - 128) / 128).
    """

    def __init__(self, extractor: FeatureExtractor) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"{self.extractor.description.name}: expects (B, 3, H, W), got {tuple(x.shape)}"
            )
        if not torch.equal(x[:, :1].expand_as(x), x):
            raise ValueError(
                f"{self.extractor.description.name}: expects gray images repeated to 3 channels, "
                f"got unequal channels"
            )
        gray = torch.round(x[:, 0] * 255.0).to(torch.uint8)
        return self.extractor(gray)


def imagededup_encoder(
    name: str, model: nn.Module, transform, description: EncoderDescription
) -> AuditEncoder:
    """imagededup's CNN on `model` (put in eval mode: imagededup never does), on the CPU or GPU it
    picks.

    Its constructor logs INFO lines to a stderr handler of its own, at level DEBUG when first built
    (so `quiet` cannot lower it beforehand): INFO is disabled for the call, so that a command's
    stderr holds only its own messages."""
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        cnn = CNN(
            verbose=False,
            model_config=CustomModel(name=name, model=model.eval(), transform=transform),
        )
    finally:
        logging.disable(previous)
    return AuditEncoder(cnn, description)


def read_vit_state_dict(
    path: Path, sha256_prefix: str | None
) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict at `path` and its sha256; with a prefix, a file whose sha256 differs is not
    unpickled."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no ViT weights there; place torchvision's {VIT_WEIGHTS.name} "
            f"(vit_b_16 IMAGENET1K_SWAG_E2E_V1) there by hand"
        )
    sha256 = file_sha256(path)
    if sha256_prefix is not None and not sha256.startswith(sha256_prefix):
        raise ValueError(
            f"{path}: sha256 {sha256} does not start with {sha256_prefix}; "
            f"not torchvision's {VIT_WEIGHTS.name}"
        )
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike for a bad file
        raise ValueError(f"{path}: not a readable torch state dict ({exc})") from exc
    return state_dict, sha256


def vit_encoder(
    weights_path: Path, *, sha256_prefix: str | None = VIT_SHA256_PREFIX
) -> AuditEncoder:
    """imagededup's ViT (the paper's encoder) with vit_b_16 weights from `weights_path`.

    `sha256_prefix` is the file's expected sha256 start (the SWAG file's `9ac1b537`); None accepts
    any vit_b_16 state dict for 384 px (tests), whose sha256 is recorded all the same.
    """
    state_dict, sha256 = read_vit_state_dict(weights_path, sha256_prefix)
    try:
        model = StateDictViT(state_dict)
    except RuntimeError as exc:
        raise ValueError(
            f"{weights_path}: not a vit_b_16 state dict for {VIT_IMAGE_SIZE} px ({exc})"
        ) from exc
    description = EncoderDescription(
        name=f"imagededup ViT (vit_b_16, {VIT_IMAGE_SIZE} px, mean of encoder outputs)",
        weights=sha256,
        embedding_size=VIT_EMBEDDING,
    )
    return imagededup_encoder(ViT.name, model, ViT.transform, description)


def extractor_encoder(extractor: FeatureExtractor, name: str) -> AuditEncoder:
    """A radsynth feature extractor run through imagededup, described with its weights and width."""
    description = EncoderDescription(
        name=name, weights=extractor.description.weights, embedding_size=extractor.num_features
    )
    return imagededup_encoder(
        extractor.description.name, GrayExtractorModel(extractor), UNIT_TENSOR, description
    )


def offline_inception_encoder() -> AuditEncoder:
    """The FID stage's offline InceptionV3 through imagededup: the fallback where no ViT weights
    exist."""
    extractor = offline_inception()
    return extractor_encoder(
        extractor, f"offline fallback, not the paper's ViT: {extractor.description.name}"
    )


def random_encoder_for_tests() -> AuditEncoder:
    """A random 16-feature CNN through imagededup, for unit tests only: its embeddings mean
    nothing."""
    extractor = random_cnn(num_features=16, input_size=32)
    return extractor_encoder(extractor, f"{extractor.description.name}, unit tests only")


def encode(encoder: AuditEncoder, images: np.ndarray) -> np.ndarray:
    """Embeddings (N, D) float32 of uint8 gray images (N, H, W), through imagededup's batch path.

    That path (`encode_images`: batches of 64 through a DataLoader, under `torch.no_grad`) reads
    image files only, so the images are written as PNG files (lossless), `ENCODE_BLOCK` at a time,
    into a temporary folder. The other path, `encode_image(image_array=...)`, makes one forward
    call per image (and with autograd on, unless the caller turns it off). Measured here with the
    offline Inception on 32 images of 256 px, 2 shared cores: 189 s one image at a time (in
    inference mode), 39 s through the folder, of which 0.3 s writing the PNG files; the
    embeddings were equal.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(
            f"{encoder.description.name}: expects uint8 gray images (N, H, W), "
            f"got {images.dtype} {images.shape}"
        )
    out = np.empty((len(images), encoder.description.embedding_size), dtype=np.float32)
    with tqdm(
        total=len(images), desc=f"encoding ({encoder.description.name})", unit="image"
    ) as bar:
        for first in range(0, len(images), ENCODE_BLOCK):
            block = images[first : first + ENCODE_BLOCK]
            out[first : first + len(block)] = encode_block(encoder, block)
            bar.update(len(block))
    return out


def encode_block(encoder: AuditEncoder, images: np.ndarray) -> np.ndarray:
    """One block through `encode_images` on a temporary folder of PNG files named by position."""
    names = [f"{index:06d}.png" for index in range(len(images))]
    with (
        tempfile.TemporaryDirectory(prefix="radsynth-encode-") as folder,
        quiet(encoder.cnn.logger),
    ):
        for name, image in zip(names, images):
            Image.fromarray(np.ascontiguousarray(image)).save(Path(folder) / name)
        encodings = encoder.cnn.encode_images(folder)
    missing = [name for name in names if name not in encodings]
    if missing:
        raise RuntimeError(
            f"imagededup returned no embedding for {len(missing)} image(s) of the block, "
            f"e.g. {missing[0]}"
        )
    return np.stack([np.asarray(encodings[name], dtype=np.float32).reshape(-1) for name in names])


@contextlib.contextmanager
def quiet(logger: logging.Logger) -> Iterator[None]:
    """imagededup logs a start and an end line per `encode_images` call; the progress bar says as
    much."""
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
