"""The gather stage on real shard stores from a tiny, untrained U-Net and an untrained (seeded)
facing classifier: what is checked is the bookkeeping (facing, flips, manifest, reader), not
image quality."""

import numpy as np
import pytest
from helpers import BETAS, PROVENANCE, read_store, shard_kwargs, tiny_unet
from PIL import Image
from scipy import ndimage

from radsynth.core.settings.sample import Architecture
from radsynth.core.tables import read_table, read_table_provenance
from radsynth.sample.facing import (
    LEFT,
    new_classifier,
    predict_facing,
    save_classifier,
)
from radsynth.sample.gather import gather_checkpoint, plot_checkpoint_grid
from radsynth.sample.plan import seed_label, shard_plan
from radsynth.sample.sampler import sample_shard
from radsynth.sample.seeds import image_seed
from radsynth.sample.store import image_id, open_left_facing

BASE_SEED = 1
#: The label the shard jobs of set "initial" at checkpoint 2 seed their images from.
SEED_LABEL = "initial/ckpt002"


@pytest.fixture(scope="module")
def gathered(tmp_path_factory):
    root = tmp_path_factory.mktemp("gather")
    unet = tiny_unet()
    stores = []
    for shard, (first, count) in enumerate(shard_plan(10, 4)):
        out = root / f"shard{shard}.zarr"
        sample_shard(
            unet,
            BETAS,
            out,
            **shard_kwargs(
                root,
                checkpoint_label=SEED_LABEL,
                base_seed=BASE_SEED,
                shard_index=shard,
                first_global_index=first,
                n_images=count,
                batch_size=2,
                steps=3,
            ),
        )
        stores.append(out)
    classifier = new_classifier(
        Architecture(channels=(4, 8), analysis_size=16), image_size=16, seed=3
    )
    save_classifier(classifier, root / "facing.safetensors")
    manifest = gather_checkpoint(
        stores,
        root / "facing.safetensors",
        root / "manifest.csv",
        checkpoint_label="ckpt002",
        batch_size=4,
        provenance=PROVENANCE,
        progress=False,
    )
    plot_checkpoint_grid(
        root / "manifest.csv",
        root / "grid.png",
        checkpoint_label="ckpt002",
        grid_images=8,
        provenance=PROVENANCE,
    )
    return root, stores, classifier, manifest


def stored_images(stores) -> np.ndarray:
    """The shards' images in global-index order, read straight from their Zarr arrays."""
    arrays = [read_store(store) for store in stores]
    assert np.concatenate([array["global_index"] for array in arrays]).tolist() == list(range(10))
    return np.concatenate([array["images"] for array in arrays])


def test_shard_plan_covers_every_image_once():
    assert shard_plan(10, 4) == [(0, 4), (4, 4), (8, 2)]
    assert shard_plan(8000, 2000)[-1] == (6000, 2000)
    with pytest.raises(ValueError, match="images_per_shard"):
        shard_plan(10, 0)


def test_sets_of_one_checkpoint_get_distinct_seed_labels():
    assert [seed_label(sample_set, "ckpt034") for sample_set in ("initial", "large")] == [
        "initial/ckpt034",
        "large/ckpt034",
    ]


def test_image_ids_of_two_sets_of_one_checkpoint_differ():
    assert image_id("initial/ckpt034", 123) == "initial-ckpt034_000123"
    assert image_id("large/ckpt034", 123) == "large-ckpt034_000123"


def test_manifest_rows_match_the_stores(gathered):
    root, *_ = gathered
    on_disk = read_table(root / "manifest.csv")
    assert list(on_disk["image_id"]) == [f"initial-ckpt002_{g:06d}" for g in range(10)]
    assert list(on_disk["shard"]) == ["shard0.zarr"] * 4 + ["shard1.zarr"] * 4 + ["shard2.zarr"] * 2
    assert list(on_disk["index"]) == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert list(on_disk["global_index"]) == list(range(10))
    assert list(on_disk["seed"]) == [image_seed(BASE_SEED, SEED_LABEL, g) for g in range(10)]
    assert list(on_disk["flipped"]) == list(on_disk["facing"] == "right")
    assert read_table_provenance(root / "manifest.csv")["checkpoint"] == "ckpt002"


def test_recorded_flips_make_every_image_face_left(gathered):
    """The classifier is mirror-antisymmetric (mirroring an image flips its prediction), so after
    the recorded flips it must call every image left-facing; the seeded net calls both ways here."""
    _, stores, classifier, manifest = gathered
    assert 0 < manifest["flipped"].sum() < 10
    stored = stored_images(stores)
    standardized = np.where(
        manifest["flipped"].to_numpy()[:, None, None], stored[:, :, ::-1], stored
    )
    facing, _ = predict_facing(classifier, standardized, batch_size=3)
    assert facing.tolist() == [LEFT] * 10


def test_reader_applies_the_recorded_flips(gathered):
    root, stores, *_ = gathered
    stored = stored_images(stores)
    on_disk = read_table(root / "manifest.csv")
    standardized = open_left_facing(root / "manifest.csv")
    assert len(standardized) == 10
    for row in on_disk.itertuples():
        expected = np.fliplr(stored[row.global_index]) if row.flipped else stored[row.global_index]
        np.testing.assert_array_equal(standardized[row.image_id], expected)


def grid_panels(pixels: np.ndarray) -> list[tuple[slice, slice]]:
    """Bounding boxes of the grid's image panels (with their frames) in reading order: the
    connected non-white regions over 50 px tall (text is smaller)."""
    labels, _ = ndimage.label(~(pixels == 255).all(axis=-1))
    boxes = [box for box in ndimage.find_objects(labels) if box[0].stop - box[0].start > 50]
    return sorted(boxes, key=lambda box: (box[0].start // 20, box[1].start))


def panel_image(pixels: np.ndarray, box: tuple[slice, slice], side: int) -> np.ndarray:
    """The side x side image drawn in a panel, read at the centre of each enlarged pixel."""
    rows, columns = (
        span.start + ((np.arange(side) + 0.5) * (span.stop - span.start) / side).astype(int)
        for span in box
    )
    return pixels[np.ix_(rows, columns)]


def test_grid_shows_the_first_images_left_facing_with_the_mirrored_ones_framed(gathered):
    """The grid's 8 panels, read back from the PNG, are the stores' first 8 images in global-index
    order, mirrored where the manifest says flipped, and only those panels have an orange frame."""
    root, stores, _, manifest = gathered
    grid = Image.open(root / "grid.png")
    assert grid.text["provenance_config_hash"] == "abc"
    assert "ckpt002: 8 of 10 samples" in grid.text["Title"]
    flipped = manifest["flipped"].to_numpy()[:8]
    assert 0 < flipped.sum() < 8
    stored = stored_images(stores)[:8]
    pixels = np.asarray(grid.convert("RGB")).astype(int)
    panels = grid_panels(pixels)
    assert len(panels) == 8
    for number, (box, was_flipped) in enumerate(zip(panels, flipped)):
        shown = panel_image(pixels, box, 16)
        assert (shown == shown[..., :1]).all(), number  # grey, drawn with the gray colour map
        expected = stored[number][:, ::-1] if was_flipped else stored[number]
        np.testing.assert_allclose(shown[..., 0], expected, atol=1, err_msg=f"panel {number}")
        orange = (np.abs(pixels[box] - [255, 127, 14]).sum(axis=-1) < 40).sum()
        assert (orange > 500) == was_flipped, number


def test_classifier_for_another_size_is_refused(gathered, tmp_path):
    root, stores, *_ = gathered
    other = new_classifier(Architecture(channels=(4,), analysis_size=16), image_size=32, seed=0)
    save_classifier(other, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="other.safetensors"):
        gather_checkpoint(
            stores,
            tmp_path / "other.safetensors",
            tmp_path / "m.csv",
            checkpoint_label="x",
            batch_size=4,
            provenance={},
            progress=False,
        )
