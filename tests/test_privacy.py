"""The release's privacy gate on planted copies of real images: a near copy mirrored left-right, a
near copy as stored, a pixel-identical mirrored copy, and an image far from every real one.

Distances are worked out by hand from MediSyn's definition (16 patches of 4 x 4 pixels here, the
largest root-mean-square difference in [0, 1] units), not with the patch-distance code."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radsynth.core.tables import write_table
from radsynth.data.atlas import atlas_from_images, write_atlas
from radsynth.release.privacy import Candidate, PrivacyGateError, check_privacy

REAL_IDS = ["0000101.png", "0000102.png", "0000103.png"]
#: The release threshold of the demo preset (near_duplicate_patch_distance).
THRESHOLD = 0.05


@pytest.fixture(scope="module")
def real_images() -> np.ndarray:
    """Three 16 x 16 random films with values below 200, so a planted +51 cannot saturate; any two
    differ by about 0.4 in every patch, mirrored or not."""
    return np.random.default_rng(0).integers(0, 200, (3, 16, 16), dtype=np.uint8)


@pytest.fixture(scope="module")
def atlas(real_images: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("privacy") / "atlas.h5"
    write_atlas(path, atlas_from_images(real_images, REAL_IDS))
    return path


def nearest_real(path: Path, rows: list[tuple[str, str, float]]) -> Path:
    """nearest_real.csv as the audit writes it: image_id, nearest_real_id, similarity."""
    frame = pd.DataFrame(rows, columns=["image_id", "nearest_real_id", "similarity"])
    write_table(frame, path, provenance={"encoder_name": "planted by the test"})
    return path


def gate(candidates: list[Candidate], atlas: Path, nearest_csv: Path) -> dict:
    return check_privacy(candidates, atlas, nearest_csv, near_duplicate_patch_distance=THRESHOLD)


def test_a_mirrored_near_copy_fails_naming_the_real_image(atlas, real_images, tmp_path):
    """Real image 2 mirrored, one pixel raised by 34 grey levels: not pixel-identical, and its
    distance to the mirrored original is (34 / 255) / sqrt(16) = 0.0333 (the other 15 patches
    are 0), while to the original as stored it is about 0.4."""
    copy = real_images[1][:, ::-1].copy()
    copy[6, 9] += 34
    far = (real_images[0].astype(np.int16) + 100).clip(0, 255).astype(np.uint8)[::-1]
    csv = nearest_real(
        tmp_path / "nearest_real.csv",
        [("ckpt034_s001", REAL_IDS[1], 0.97), ("ckpt034_s002", REAL_IDS[0], 0.41)],
    )
    with pytest.raises(PrivacyGateError) as error:
        gate(
            [
                Candidate("ckpt034_s001", "images/ckpt034_s001.png", copy),
                Candidate("ckpt034_s002", "images/ckpt034_s002.png", far),
            ],
            atlas,
            csv,
        )
    message = str(error.value)
    assert "1 problem(s) in 2 packaged images" in message
    assert re.search(
        r"images/ckpt034_s001\.png \(ckpt034_s001\): patch distance 0\.0333 <= 0\.05 to real "
        r"image 0000102\.png mirrored",
        message,
    ), message
    assert "ckpt034_s002" not in message


def test_a_near_copy_as_stored_fails_too(atlas, real_images, tmp_path):
    copy = real_images[2].copy()
    copy[0, 0] += 34
    csv = nearest_real(tmp_path / "nearest_real.csv", [("s7", REAL_IDS[2], 0.99)])
    with pytest.raises(
        PrivacyGateError, match=r"patch distance 0\.0333 <= 0\.05 to real image 0000103\.png as "
    ):
        gate([Candidate("s7", "s7.png", copy)], atlas, csv)


def test_a_pixel_identical_mirrored_copy_is_named_whatever_the_nearest_real_csv_says(
    atlas, real_images, tmp_path
):
    """The audit's encoder named another real image as nearest: the pixel lookup still finds the
    mirrored original."""
    csv = nearest_real(tmp_path / "nearest_real.csv", [("s1", REAL_IDS[0], 0.5)])
    with pytest.raises(PrivacyGateError) as error:
        gate([Candidate("s1", "s1.png", real_images[2][:, ::-1].copy())], atlas, csv)
    assert str(error.value).endswith(
        "1 problem(s) in 1 packaged images, nothing was written:\n"
        "  s1.png (s1): pixel-identical to real image 0000103.png mirrored"
    )


def test_an_image_far_from_every_real_one_passes_with_its_distance_recorded(
    atlas, real_images, tmp_path
):
    """Real image 1 with its top-left 4 x 4 patch raised by 51 grey levels: 51 / 255 = 0.2 in every
    pixel of one patch, so the distance is exactly 0.2, above the threshold."""
    distinct = real_images[0].copy()
    distinct[:4, :4] += 51
    csv = nearest_real(tmp_path / "nearest_real.csv", [("s9", REAL_IDS[0], 0.93)])
    record = gate([Candidate("s9", "s9.png", distinct)], atlas, csv)
    assert record["passed"] is True and record["n_checked"] == 1 and record["n_real_images"] == 3
    assert record["min_patch_distance"] == pytest.approx(0.2, abs=1e-6)
    assert (record["min_patch_distance_image_id"], record["min_patch_distance_real_id"]) == (
        "s9",
        REAL_IDS[0],
    )
    assert record["max_similarity"] == pytest.approx(0.93)
    assert record["nearest_real_encoder"] == "planted by the test"
    assert json.dumps(record)  # written as privacy_gate.json


def test_a_copy_exactly_at_the_threshold_fails(atlas, real_images, tmp_path):
    """One pixel raised by 51 grey levels: (51 / 255) / sqrt(16) = 0.05, the threshold itself."""
    copy = real_images[0].copy()
    copy[9, 2] += 51
    csv = nearest_real(tmp_path / "nearest_real.csv", [("s3", REAL_IDS[0], 0.9)])
    with pytest.raises(PrivacyGateError, match=r"patch distance 0\.0500 <= 0\.05 to real image"):
        gate([Candidate("s3", "s3.png", copy)], atlas, csv)


def test_every_problem_is_named_in_one_error(atlas, real_images, tmp_path):
    """A wrong size, an image whose nearest real image is not in the atlas, an image the audit
    never compared and a near copy (one pixel of real image 2 raised by 34: 0.0333): four problems,
    each naming its file, image and the table or atlas at fault, none hiding the next."""
    far = (255 - real_images[0])[::-1].copy()
    near = real_images[1].copy()
    near[8, 8] += 34
    csv = nearest_real(
        tmp_path / "nearest_real.csv",
        [("s1", REAL_IDS[0], 0.5), ("s3", "0000999.png", 0.4), ("s4", REAL_IDS[1], 0.9)],
    )
    candidates = [
        Candidate("s1", "a/s1.png", np.zeros((8, 8), np.uint8)),
        Candidate("s3", "a/s3.png", far),
        Candidate("s2", "a/s2.png", far),
        Candidate("s4", "a/s4.png", near),
    ]
    with pytest.raises(PrivacyGateError) as error:
        gate(candidates, atlas, csv)
    assert str(error.value) == (
        "privacy gate: 4 problem(s) in 4 packaged images, nothing was written:\n"
        "  a/s1.png (s1): (8, 8) pixels, the atlas' images are (16, 16)\n"
        f"  a/s3.png (s3): its nearest real image '0000999.png' ({csv}) is not in {atlas}\n"
        f"  a/s2.png (s2): not in {csv}, so never compared with the real images\n"
        "  a/s4.png (s4): patch distance 0.0333 <= 0.05 to real image 0000102.png as stored"
    )


def test_pixel_identical_copies_are_found_in_every_hash_block(tmp_path):
    """An atlas of 600 images spans three blocks of 256: copies of its first image as stored and of
    its last mirrored are both named (and, at distance 0, near copies too)."""
    images = np.random.default_rng(1).integers(0, 256, (600, 16, 16), dtype=np.uint8)
    names = [f"{i:07d}.png" for i in range(600)]
    atlas = tmp_path / "atlas.h5"
    write_atlas(atlas, atlas_from_images(images, names))
    csv = nearest_real(
        tmp_path / "nearest_real.csv", [("s1", names[0], 1.0), ("s2", names[599], 1.0)]
    )
    candidates = [
        Candidate("s1", "s1.png", images[0].copy()),
        Candidate("s2", "s2.png", images[599][:, ::-1].copy()),
    ]
    with pytest.raises(PrivacyGateError) as error:
        gate(candidates, atlas, csv)
    assert str(error.value).split("\n")[1:] == [
        "  s1.png (s1): pixel-identical to real image 0000000.png as stored",
        "  s1.png (s1): patch distance 0.0000 <= 0.05 to real image 0000000.png as stored",
        "  s2.png (s2): pixel-identical to real image 0000599.png mirrored",
        "  s2.png (s2): patch distance 0.0000 <= 0.05 to real image 0000599.png mirrored",
    ]


def test_an_image_id_that_reads_as_a_number_stays_text(atlas, real_images, tmp_path):
    distinct = real_images[2].copy()
    distinct[:4, :4] += 51
    csv = nearest_real(tmp_path / "nearest_real.csv", [("0042", REAL_IDS[2], 0.9)])
    record = gate([Candidate("0042", "0042.png", distinct)], atlas, csv)
    assert record["min_patch_distance_image_id"] == "0042"


def test_no_image_to_check_is_an_error(atlas, tmp_path):
    csv = nearest_real(tmp_path / "nearest_real.csv", [])
    with pytest.raises(PrivacyGateError, match="^privacy gate: no image to check; a release"):
        gate([], atlas, csv)


def test_nearest_real_csv_without_its_columns_or_with_a_repeated_image_is_refused(
    atlas, real_images, tmp_path
):
    candidates = [Candidate("s1", "s1.png", real_images[0])]
    lacking = tmp_path / "lacking.csv"
    lacking.write_text("image_id\ns1\n")
    with pytest.raises(
        ValueError, match=r"lacking\.csv: lacks column\(s\) nearest_real_id, similarity$"
    ):
        gate(candidates, atlas, lacking)
    repeated = nearest_real(
        tmp_path / "repeated.csv", [("s1", REAL_IDS[0], 0.5), ("s1", REAL_IDS[1], 0.4)]
    )
    with pytest.raises(ValueError, match=r"repeated\.csv: image id 's1' has more than one row$"):
        gate(candidates, atlas, repeated)


def test_the_record_names_the_closest_and_most_similar_of_several_images(real_images, tmp_path):
    """Ids that look like numbers (and one that reads as missing, "NA") stay text. Candidate "NA"
    has 3 pixels of one patch raised by 51 (distance sqrt(3 x 0.2^2 / 16) = 0.0866025, recorded
    to 6 decimals), candidate "007" a whole patch (0.2); the most similar by the encoder is
    "007"."""
    atlas = tmp_path / "atlas.h5"
    write_atlas(atlas, atlas_from_images(real_images, ["0101", "0102", "0103"]))
    closer, farther = real_images[0].copy(), real_images[1].copy()
    closer[0, :3] += 51
    farther[4:8, 4:8] += 51
    csv = nearest_real(
        tmp_path / "nearest.csv", [("NA", "0101", 0.80), ("007", "0102", 0.9512345678)]
    )
    record = gate(
        [Candidate("007", "007.png", farther), Candidate("NA", "NA.png", closer)], atlas, csv
    )
    assert record == {
        "passed": True,
        "n_checked": 2,
        "n_real_images": 3,
        "atlas_file": "atlas.h5",
        "atlas_sha256": hashlib.sha256(atlas.read_bytes()).hexdigest(),
        "identical_rule": "SHA-256 of each packaged image's pixels looked up among the real "
        "images as stored and mirrored left-right",
        "identical_matches": 0,
        "near_duplicate_rule": "fail where the patch distance to the nearest real image (as "
        "stored or mirrored, the smaller) is at or below the threshold",
        "near_duplicate_patch_distance": THRESHOLD,
        "min_patch_distance": 0.086603,
        "min_patch_distance_image_id": "NA",
        "min_patch_distance_real_id": "0101",
        "nearest_real_file": "nearest.csv",
        "nearest_real_encoder": "planted by the test",
        "max_similarity": 0.951235,
        "max_similarity_image_id": "007",
        "max_similarity_real_id": "0102",
    }


def test_a_copy_of_a_mirror_symmetric_real_image_is_named_as_stored(tmp_path):
    """Stored and mirrored are the same image: the tie goes to "as stored"."""
    half = np.random.default_rng(3).integers(0, 200, (16, 8), dtype=np.uint8)
    symmetric = np.hstack([half, half[:, ::-1]])
    atlas = tmp_path / "atlas.h5"
    write_atlas(atlas, atlas_from_images(symmetric[None], ["0000201.png"]))
    copy = symmetric.copy()
    copy[3, 3] += 34
    csv = nearest_real(tmp_path / "nearest_real.csv", [("s5", "0000201.png", 0.99)])
    with pytest.raises(
        PrivacyGateError,
        match=r"patch distance 0\.0333 <= 0\.05 to real image 0000201\.png as stored$",
    ):
        gate([Candidate("s5", "s5.png", copy)], atlas, csv)
