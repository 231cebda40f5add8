"""Config sections `data`, `preprocess` and `split`: where the atlas comes from and how it is
prepared. Values (and why they are what they are) live in the presets, config/*.yaml."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeInt, ValidationInfo, field_validator

from radsynth.core.config import ConfigModel, Count


class DemoAtlasSettings(ConfigModel):
    """`data.demo`: the procedural phantom atlas (radsynth.demo.phantom); image i depends only on
    (seed, i)."""

    n_images: int = Field(ge=4, le=9999)  # CSXA file stems hold case numbers 1..9999
    seed: NonNegativeInt
    negative_fraction: float = Field(ge=0, le=1)  # written as negatives (bone dark)
    sixteen_bit_fraction: float = Field(ge=0, le=1)
    rgb_fraction: float = Field(ge=0, le=1)
    min_side: int = Field(ge=64)  # original image sides, pixels
    max_side: int = Field(ge=64)

    @field_validator("rgb_fraction")
    @classmethod
    def _storage_shares_fit(cls, rgb_fraction: float, info: ValidationInfo) -> float:
        """A film is stored 16-bit, colour or 8-bit grey: the first two shares leave the third."""
        sixteen_bit = info.data.get("sixteen_bit_fraction")
        if sixteen_bit is not None and sixteen_bit + rgb_fraction > 1:
            raise ValueError(
                f"sixteen_bit_fraction {sixteen_bit} + rgb_fraction {rgb_fraction} exceeds 1"
            )
        return rgb_fraction

    @field_validator("max_side")
    @classmethod
    def _sides_ordered(cls, max_side: int, info: ValidationInfo) -> int:
        """Sides are drawn from min_side..max_side."""
        min_side = info.data.get("min_side")
        if min_side is not None and max_side < min_side:
            raise ValueError(f"must be at least min_side {min_side}, got {max_side}")
        return max_side


class ArchiveSettings(ConfigModel):
    """One CSXA zip: where it is fetched from, its name on disk, and what it must measure.
    `size` and `checksum` may be null: the run then warns and records the computed sha256."""

    url: str
    filename: str = Field(pattern=r"^[^/]+\.zip$")
    size: Count | None
    checksum: str | None = Field(pattern=r"^(md5|sha256):[0-9a-fA-F]+$")


class CsxaArchives(ConfigModel):
    """`data.csxa.archives`: the image and the annotation zips."""

    png: ArchiveSettings
    json_archive: ArchiveSettings = Field(alias="json")


class DownloadSettings(ConfigModel):
    """`data.csxa.download`: operational (how a transfer is retried), no effect on results."""

    timeout_s: float = Field(gt=0)
    max_attempts: Count
    chunk_bytes: int = Field(ge=1024)
    retry_wait_s: float = Field(ge=0)


class CsxaSettings(ConfigModel):
    """`data.csxa`: CSXA V3.0, downloaded or placed by hand. `metadata_table` is CSXA's
    per-image sheet (its pixel spacing), placed by hand from the landing page; null: no image
    has a spacing, and millimetre figures are left out (the atlas records NaN)."""

    landing_page: str
    archives: CsxaArchives
    download: DownloadSettings
    metadata_table: str | None


#: Licences a release can carry: those whose figshare licence id radsynth knows
#: (radsynth.release.card.FIGSHARE_LICENCES; a test keeps the two equal).
ReleaseLicence = Literal["CC BY 4.0"]


class LocalOrigin(ConfigModel):
    """What the user states of their own images (no defaults): the release card's data sentence,
    licence and citation. The card reads only these keys, so moving the images reruns no
    release."""

    description: str = Field(min_length=1)  # completes "The model learnt from the N images of"
    licence: ReleaseLicence
    citation: str = Field(min_length=1)


class LocalSourceSettings(LocalOrigin):
    """`data.local`: the user's own radiographs, in CSXA's layout, and their origin. Annotations
    are required: the facing stage labels the real images from their vertebral-body keypoints,
    and without them no sample could be turned left-facing (radsynth.sample.facing)."""

    images: str = Field(min_length=1)  # folder of PNG (or DICOM) images, any depth
    annotations: str = Field(min_length=1)  # LabelMe JSON per image stem (radsynth.data.labelme)
    metadata_table: str | None  # CSXA's metadata layout; null: no pixel spacing


class DataSettings(ConfigModel):
    """Config section `data`: the source, and the section of that source (the others may be
    absent; check_config refuses a source without its section)."""

    source: Literal["demo", "csxa", "local"]
    demo: DemoAtlasSettings | None = None
    csxa: CsxaSettings | None = None
    local: LocalSourceSettings | None = None


class NegativeDetection(ConfigModel):
    """`preprocess.negative_detection`: the negative-scan detector (radsynth's method)."""

    analysis_size: int = Field(ge=16)  # side of the downsampled copy the statistics are taken on
    uniform_tolerance: float = Field(ge=0)  # 5th-95th percentile spread of a flat edge band
    max_trim_fraction: float = Field(ge=0, le=0.4)  # most of each side trimmed as flat band
    side_fraction: float = Field(gt=0, le=0.4)  # width of each side strip (of trimmed width)
    centre_fraction: float = Field(gt=0, le=1)  # width of the central column
    row_margin_fraction: float = Field(ge=0, le=0.4)  # rows left out at top and bottom
    threshold: float  # score above which the image is called negative


class QcSettings(ConfigModel):
    """`preprocess.qc`: the QC figure's examples (display only)."""

    n_examples: Count
    seed: NonNegativeInt


#: How an image becomes a square (radsynth.data.resize).
ResizeMode = Literal["resize", "letterbox"]


class PreprocessSettings(ConfigModel):
    """Config section `preprocess`."""

    size: int = Field(ge=8)  # side of the square training images
    resize_mode: ResizeMode
    max_rejected_fraction: float = Field(ge=0, le=1)
    negative_detection: NegativeDetection
    qc: QcSettings


class SplitSettings(ConfigModel):
    """Config section `split`: the seeded train/validation partition of the split run."""

    val_fraction: float = Field(gt=0, lt=1)
    seed: NonNegativeInt
