"""Tests of the sampling stage (radsynth.sample.sampler and the scheduler, seed, denoising,
quantization and work-store modules it drives) on a tiny, randomly initialised (untrained) UNet
on CPU.

Images from an untrained model are noise-like; the tests check the sampling machinery (seeds,
shards, resume, integrity), not image quality.
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from helpers import BETAS, PROVENANCE, TINY_LUCIDRAINS, read_store, shard_kwargs, tiny_unet
from zarr.storage import LocalStore

from radsynth.sample.denoising import sample_batch
from radsynth.sample.quantization import to_uint8
from radsynth.sample.sampler import sample_shard
from radsynth.sample.schedulers import make_sampler_scheduler
from radsynth.sample.seeds import image_generators, image_seed, initial_noise
from radsynth.sample.store import open_samples
from radsynth.sample.work_store import work_store_path
from radsynth.train.model import build_unet

torch.set_num_threads(1)

T = len(BETAS)  # training timesteps of the stand-in schedule


@pytest.fixture(scope="module")
def unet() -> torch.nn.Module:
    return tiny_unet()


def fail_writes_to(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    """Fault injection: the local store raises ENOSPC when zarr writes this chunk key."""
    real_set = LocalStore.set

    async def set_or_fail(self, k, value):
        if k == key:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return await real_set(self, k, value)

    monkeypatch.setattr(LocalStore, "set", set_or_fail)


def interrupted_by_full_disk(unet, tmp_path, monkeypatch, failing_batch: int, **overrides) -> Path:
    """A partial store whose batches before `failing_batch` are done."""
    kwargs = shard_kwargs(tmp_path, **overrides)
    with monkeypatch.context() as patch:
        fail_writes_to(patch, f"images/c/{failing_batch}/0/0")
        with pytest.raises(OSError):
            sample_shard(unet, BETAS, tmp_path / "out" / "shard0.zarr", **kwargs)
    return work_store_path(tmp_path / "out" / "shard0.zarr", kwargs["work_dir"])


@pytest.mark.parametrize(
    "name, cls",
    [
        ("ddpm", DDPMScheduler),
        ("ddim", DDIMScheduler),
        ("dpmsolver++", DPMSolverMultistepScheduler),
    ],
)
@pytest.mark.parametrize("clip", [True, False])
def test_scheduler_uses_trained_betas_and_clip_setting(name, cls, clip):
    scheduler = make_sampler_scheduler(
        name,
        BETAS,
        prediction_type="v_prediction",
        clip_sample=clip,
        num_train_timesteps=T,
        solver_order=2 if name == "dpmsolver++" else None,
    )
    assert isinstance(scheduler, cls)
    assert torch.equal(scheduler.betas, BETAS.float())
    assert scheduler.config.prediction_type == "v_prediction"
    if name == "dpmsolver++":
        assert (scheduler.config.algorithm_type, scheduler.config.solver_order) == (
            "dpmsolver++",
            2,
        )
        assert scheduler.config.thresholding is clip and scheduler.config.sample_max_value == 1.0
    else:
        assert scheduler.config.clip_sample is clip and scheduler.config.clip_sample_range == 1.0


def test_dpmsolver_thresholding_with_max_one_is_exactly_the_clamp():
    scheduler = make_sampler_scheduler(
        "dpmsolver++",
        BETAS,
        prediction_type="v_prediction",
        clip_sample=True,
        num_train_timesteps=T,
        solver_order=2,
    )
    x0 = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 3
    assert torch.equal(scheduler._threshold_sample(x0), x0.clamp(-1, 1))


def test_sample_shard_refuses_bad_settings_before_work(unet, tmp_path):
    with pytest.raises(ValueError, match="sampling.weights must be one of online, ema, got 'swa'"):
        sample_shard(unet, BETAS, tmp_path / "s.zarr", **shard_kwargs(tmp_path, weights="swa"))
    with pytest.raises(ValueError, match="sampling.batch_size must be an integer >= 1, got 0"):
        sample_shard(unet, BETAS, tmp_path / "s.zarr", **shard_kwargs(tmp_path, batch_size=0))
    assert not (tmp_path / "work").exists()


def test_scheduler_refuses_bad_requests():
    with pytest.raises(
        ValueError, match="betas hold 1000 timesteps but num_train_timesteps is 999"
    ):
        make_sampler_scheduler(
            "ddpm",
            BETAS,
            prediction_type="v_prediction",
            clip_sample=True,
            num_train_timesteps=999,
            solver_order=None,
        )
    with pytest.raises(
        ValueError,
        match="sampling.sampler must be one of ddpm, ddim, dpmsolver\\+\\+, unipc, deis, "
        "got 'euler'",
    ):
        make_sampler_scheduler(
            "euler",
            BETAS,
            prediction_type="v_prediction",
            clip_sample=True,
            num_train_timesteps=T,
            solver_order=None,
        )


def test_image_seed_is_stable_and_distinct():
    # Golden values: changing them changes every image of every released sample set.
    assert image_seed(20240501, "step068000", 0) == 7815497148702854083
    assert image_seed(20240501, "step068000", 7999) == 8290194854794582576
    seeds = {
        image_seed(b, c, i) for b in (0, 1) for c in ("step068000", "step080000") for i in range(50)
    }
    assert len(seeds) == 200 and max(seeds) < 2**63
    with pytest.raises(ValueError, match="global_index must be a non-negative integer, got -1"):
        image_seed(1, "a", -1)


@pytest.mark.parametrize("base_seed", [True, 1.0, "1"])
def test_image_seed_refuses_a_base_seed_that_is_not_an_integer(base_seed):
    # a bool or a float would silently become a seed (int(True) == 1), so they are refused
    with pytest.raises(TypeError, match=f"base_seed must be an integer, got {base_seed!r}"):
        image_seed(base_seed, "a", 0)


@pytest.mark.parametrize("global_index", [True, 2.0])
def test_image_seed_refuses_an_index_that_is_not_an_integer(global_index):
    with pytest.raises(
        ValueError, match=f"global_index must be a non-negative integer, got {global_index!r}"
    ):
        image_seed(1, "a", global_index)


def test_initial_noise_is_drawn_on_the_generators_device_then_moved():
    """Each image's draw is torch.randn from its own generator, on the generator's device (CPU)
    whatever the default or target device, in the requested dtype."""
    seeds = [11, 12]
    expected = torch.cat(
        [
            torch.randn(
                (1, 1, 3, 3), generator=torch.Generator().manual_seed(s), dtype=torch.float64
            )
            for s in seeds
        ]
    )
    with torch.device("meta"):  # a default device the draws must not follow
        noise = initial_noise(
            image_generators(seeds, "cpu"), (1, 3, 3), device="cpu", dtype=torch.float64
        )
    assert noise.dtype == torch.float64 and noise.device.type == "cpu"
    assert torch.equal(noise, expected)
    moved = initial_noise(
        image_generators(seeds, "cpu"), (1, 3, 3), device="meta", dtype=torch.float64
    )
    assert moved.device.type == "meta" and moved.shape == (2, 1, 3, 3)


def test_to_uint8_round_and_truncate():
    x = torch.tensor([-2.0, -1.0, -0.999, 0.0, 0.5, 0.99, 1.0, 1.5])
    assert to_uint8(x, "round").tolist() == [0, 0, 0, 128, 191, 254, 255, 255]
    assert to_uint8(x, "truncate").tolist() == [0, 0, 0, 127, 191, 253, 255, 255]
    with pytest.raises(
        ValueError, match="sampling.quantization must be one of round, truncate, got 'nearest'"
    ):
        to_uint8(x, "nearest")


def test_to_uint8_at_exact_halves():
    """Values that scale to k + 0.5 with k even, where rounding half up (round), half to even and
    truncation all differ: round gives k + 1, truncate gives k."""
    x = torch.tensor([-1 / 127.5, 0.5725489854812622, 0.9960784316062927], dtype=torch.float32)
    # the same float32 arithmetic by hand: (x + 1) / 2 * 255 lands exactly on the halves
    scaled = (x.numpy() + np.float32(1)) / np.float32(2) * np.float32(255)
    assert scaled.tolist() == [126.5, 200.5, 254.5]
    assert to_uint8(x, "round").tolist() == [127, 201, 255]
    assert to_uint8(x, "truncate").tolist() == [126, 200, 254]


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpmsolver++"])
def test_image_randomness_is_per_image_exactly(name):
    """A zeroed UNet is exactly batch-invariant, so any difference would come from the noise
    plumbing."""
    zero = tiny_unet()
    with torch.no_grad():
        for parameter in zero.parameters():
            parameter.zero_()
    scheduler = make_sampler_scheduler(
        name,
        BETAS,
        prediction_type="v_prediction",
        clip_sample=True,
        num_train_timesteps=T,
        solver_order=2 if name == "dpmsolver++" else None,
    )
    seeds = [image_seed(3, "c", i) for i in range(5)]
    whole = sample_batch(
        zero, scheduler, seeds, steps=6, image_size=16, device="cpu", quantization="round"
    )
    split = [
        sample_batch(
            zero, scheduler, seeds[a:b], steps=6, image_size=16, device="cpu", quantization="round"
        )
        for a, b in ((0, 1), (1, 3), (3, 5))
    ]
    assert np.array_equal(whole, np.concatenate(split))
    assert len({image.tobytes() for image in whole}) == 5


def test_same_images_whatever_the_shard_split(unet, tmp_path):
    one = sample_shard(unet, BETAS, tmp_path / "a" / "shard0.zarr", **shard_kwargs(tmp_path / "a"))
    parts = [
        sample_shard(
            unet,
            BETAS,
            tmp_path / "b" / f"shard{i}.zarr",
            **shard_kwargs(tmp_path / "b", shard_index=i, first_global_index=3 * i, n_images=3),
        )
        for i in (0, 1)
    ]
    other_batches = [
        sample_shard(
            unet,
            BETAS,
            tmp_path / "c" / f"shard{i}.zarr",
            **shard_kwargs(
                tmp_path / "c", shard_index=i, first_global_index=3 * i, n_images=3, batch_size=2
            ),
        )
        for i in (0, 1)
    ]
    reference = open_samples([one])
    same_layout = open_samples(parts)
    assert np.array_equal(same_layout.global_indices, np.arange(6))
    assert np.array_equal(same_layout.seeds, reference.seeds)
    assert np.array_equal(same_layout.images(range(6)), reference.images(range(6)))
    # Other batch sizes: same noise; CPU GEMM kernels differ by batch size, at most one grey level.
    regrouped = open_samples(other_batches).images(range(6)).astype(int)
    assert np.abs(regrouped - reference.images(range(6))).max() <= 1


def test_store_layout_attributes_and_provenance(unet, tmp_path):
    out = sample_shard(
        unet,
        BETAS,
        tmp_path / "out" / "shard4.zarr",
        **shard_kwargs(tmp_path, shard_index=4, first_global_index=100, n_images=5, batch_size=2),
    )
    group = zarr.open_group(out, mode="r", zarr_format=3)
    attrs = dict(group.attrs)
    assert not work_store_path(out, tmp_path / "work").exists()
    assert {
        k: attrs[k]
        for k in (
            "checkpoint",
            "sampler",
            "steps",
            "weights",
            "clip_sample",
            "quantization",
            "base_seed",
            "shard_index",
            "first_global_index",
            "n_images",
            "batch_size",
            "image_size",
            "complete",
        )
    } == {
        "checkpoint": "step000010",
        "sampler": "ddpm",
        "steps": 8,
        "weights": "ema",
        "clip_sample": True,
        "quantization": "round",
        "base_seed": 1,
        "shard_index": 4,
        "first_global_index": 100,
        "n_images": 5,
        "batch_size": 2,
        "image_size": 16,
        "complete": True,
    }
    assert attrs["provenance"] == {**PROVENANCE, "device": "cpu", "processes": 1}
    assert (
        attrs["scheduler"]["class"] == "DDPMScheduler" and attrs["model_dtype"] == "torch.float32"
    )
    assert group["images"].chunks == (2, 16, 16) and group["images"].dtype == np.uint8
    stored = read_store(out)
    assert stored["global_index"].tolist() == list(range(100, 105))
    assert stored["seed"].tolist() == [image_seed(1, "step000010", i) for i in range(100, 105)]
    assert stored["batch_done"].tolist() == [True, True, True]


def test_full_disk_fails_with_reason_and_keeps_finished_batches(
    unet, tmp_path, monkeypatch, caplog
):
    reference = read_store(
        sample_shard(
            unet,
            BETAS,
            tmp_path / "ref" / "s.zarr",
            **shard_kwargs(tmp_path / "ref", n_images=8, batch_size=2),
        )
    )
    kwargs = shard_kwargs(tmp_path, n_images=8, batch_size=2)
    out = tmp_path / "out" / "shard0.zarr"
    work = work_store_path(out, kwargs["work_dir"])
    with monkeypatch.context() as patch:
        fail_writes_to(patch, "images/c/2/0/0")
        with pytest.raises(OSError) as failure:
            sample_shard(unet, BETAS, out, **kwargs)
    assert failure.value.errno == errno.ENOSPC
    assert str(failure.value) == (
        f"[Errno 28] {work}: writing batch 2 (global images 4..5) failed: "
        "No space left on device; the 2 finished batch(es) stay marked done and are reused "
        "when the job is rerun"
    )
    assert read_store(work)["batch_done"].tolist() == [True, True, False, False]
    assert not out.exists()
    with caplog.at_level(logging.INFO, logger="radsynth.sample.work_store"):
        sample_shard(unet, BETAS, out, **kwargs)
    assert f"{work}: 2 of 4 batches done and verified" in caplog.messages
    result = read_store(out)
    assert all(np.array_equal(result[k], reference[k]) for k in reference)


def test_damaged_done_batches_are_recomputed(unet, tmp_path, monkeypatch, caplog):
    reference = read_store(
        sample_shard(
            unet,
            BETAS,
            tmp_path / "ref" / "s.zarr",
            **shard_kwargs(tmp_path / "ref", n_images=8, batch_size=2),
        )
    )
    work = interrupted_by_full_disk(
        unet, tmp_path, monkeypatch, failing_batch=3, n_images=8, batch_size=2
    )
    chunk0, chunk1 = work / "images/c/0/0/0", work / "images/c/1/0/0"
    original = chunk0.read_bytes()
    chunk0.write_bytes(original[: len(original) // 2])  # truncated: cannot be decoded
    chunk1.write_bytes(original)  # decodes, but holds batch 0's images: fails the checksum
    leftover = (
        work / "images/c/2/0/0.0123456789abcdef0123456789abcdef.partial"
    )  # a write cut short by a kill
    leftover.write_bytes(b"half a chunk")
    with caplog.at_level(logging.INFO, logger="radsynth.sample.work_store"):
        out = sample_shard(
            unet,
            BETAS,
            tmp_path / "out" / "shard0.zarr",
            **shard_kwargs(tmp_path, n_images=8, batch_size=2),
        )
    assert any(f"{work}: batch 0 is unreadable" in m for m in caplog.messages)
    assert f"{work}: batch 1 fails its checksum; recomputing it" in caplog.messages
    assert f"{work}: 1 of 4 batches done and verified" in caplog.messages
    result = read_store(out)
    assert all(np.array_equal(result[k], reference[k]) for k in reference)
    assert not list(out.rglob("*.partial"))


def test_partial_store_of_another_request_is_refused(unet, tmp_path, monkeypatch):
    work = interrupted_by_full_disk(unet, tmp_path, monkeypatch, failing_batch=1)
    out = tmp_path / "out" / "shard0.zarr"
    with pytest.raises(
        ValueError,
        match=f"{work}: was made with base_seed=1 but this run asks for base_seed=2; "
        f"delete {work} to start that shard over",
    ):
        sample_shard(unet, BETAS, out, **shard_kwargs(tmp_path, base_seed=2))
    with pytest.raises(
        ValueError, match="was made with sampler='ddpm' but this run asks for sampler='ddim'"
    ):
        sample_shard(unet, BETAS, out, **shard_kwargs(tmp_path, sampler="ddim"))
    with pytest.raises(ValueError, match="was made with model_sha256="):
        sample_shard(tiny_unet(seed=1), BETAS, out, **shard_kwargs(tmp_path))
    assert read_store(work)["batch_done"].tolist() == [True, False]


def test_finished_output_is_reused_or_refused(unet, tmp_path, caplog):
    out = sample_shard(unet, BETAS, tmp_path / "out" / "shard0.zarr", **shard_kwargs(tmp_path))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert sample_shard(unet, BETAS, out, **shard_kwargs(tmp_path)) == out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    with pytest.raises(
        ValueError, match=f"{out}: was made with steps=8 but this run asks for steps=9"
    ):
        sample_shard(unet, BETAS, out, **shard_kwargs(tmp_path, steps=9))
    # Killed after marking the work store complete but before the rename: the rerun only renames.
    work = work_store_path(out, tmp_path / "work")
    os.replace(out, work)
    with caplog.at_level(logging.INFO, logger="radsynth.sample.work_store"):
        assert sample_shard(unet, BETAS, out, **shard_kwargs(tmp_path)) == out
    assert f"{work}: 2 of 2 batches done and verified" in caplog.messages and not work.exists()
    zarr.open_group(out, mode="r+", zarr_format=3).update_attributes({"complete": False})
    with pytest.raises(
        ValueError, match=f"{out}: exists but is not a complete sample store; delete it and rerun"
    ):
        sample_shard(unet, BETAS, out, **shard_kwargs(tmp_path))


def test_open_samples_reads_in_global_order_and_refuses_bad_sets(unet, tmp_path, monkeypatch):
    shards = [
        sample_shard(
            unet,
            BETAS,
            tmp_path / f"shard{i}.zarr",
            **shard_kwargs(
                tmp_path, shard_index=i, first_global_index=2 * i, n_images=2, batch_size=2
            ),
        )
        for i in range(3)
    ]
    samples = open_samples([shards[2], shards[0], shards[1]])
    assert len(samples) == 6 and samples.attrs["checkpoint"] == "step000010"
    assert [s.global_index for s in samples] == list(range(6))
    assert [s.seed for s in samples] == [image_seed(1, "step000010", i) for i in range(6)]
    assert np.array_equal(
        samples.images([5, 0]),
        np.stack([read_store(shards[2])["images"][1], read_store(shards[0])["images"][0]]),
    )
    with pytest.raises(KeyError, match="global index 6 is not in the stores"):
        samples.images([6])
    with pytest.raises(
        ValueError,
        match=f"global index 0 \\(2 repeated in all\\) is in several stores: "
        f"{shards[0]}, {shards[0]}",
    ):
        open_samples([shards[0], shards[0]])
    with pytest.raises(
        ValueError, match="global indices 2..3 \\(2 in all\\) are in none of the stores"
    ):
        open_samples([shards[0], shards[2]])
    other = sample_shard(
        unet,
        BETAS,
        tmp_path / "ddim" / "shard1.zarr",
        **shard_kwargs(
            tmp_path / "ddim",
            sampler="ddim",
            shard_index=1,
            first_global_index=2,
            n_images=2,
            batch_size=2,
        ),
    )
    with pytest.raises(
        ValueError, match=f"{other}: sampler='ddim' differs from {shards[0]} \\(sampler='ddpm'\\)"
    ):
        open_samples([shards[0], other])
    partial = interrupted_by_full_disk(unet, tmp_path / "p", monkeypatch, failing_batch=1)
    with pytest.raises(ValueError, match=f"{partial}: sample store is incomplete"):
        open_samples([partial])


def _sample_in_child(weights: Path, out: Path, kwargs: dict) -> None:
    """Body of the process the resume test kills: a fresh interpreter state loading the saved
    model."""
    torch.set_num_threads(1)
    unet = build_unet(TINY_LUCIDRAINS)
    unet.load_state_dict(torch.load(weights, weights_only=True))
    sample_shard(unet, BETAS, out, **kwargs)


def _done_batches(work: Path) -> int:
    """Done flags written so far (one chunk file per flag; zarr renames each into place
    atomically)."""
    return len(list((work / "batch_done" / "c").glob("[0-9]*")))


def _wait_for(condition, process, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.is_alive(), "the sampling process ended before it could be killed"
        assert time.monotonic() < deadline, "the sampling process made no progress"
        time.sleep(0.005)


def test_resume_after_sigkill_gives_the_uninterrupted_result(unet, tmp_path, monkeypatch, caplog):
    n_batches, steps = 5, 40
    torch.save(unet.state_dict(), tmp_path / "weights.pt")
    started = time.monotonic()
    reference = read_store(
        sample_shard(
            unet,
            BETAS,
            tmp_path / "ref" / "s.zarr",
            **shard_kwargs(tmp_path / "ref", n_images=2 * n_batches, batch_size=2, steps=steps),
        )
    )
    batch_seconds = (time.monotonic() - started) / n_batches
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    context = multiprocessing.get_context(
        "forkserver"
    )  # a fresh process that imports torch once for all trials
    context.set_forkserver_preload(["radsynth.sample.sampler"])
    rng = random.Random(20240501)
    for trial in range(3):
        kwargs = shard_kwargs(
            tmp_path / str(trial), n_images=2 * n_batches, batch_size=2, steps=steps
        )
        out = tmp_path / str(trial) / "out" / "shard0.zarr"
        work = work_store_path(out, kwargs["work_dir"])
        child = context.Process(
            target=_sample_in_child, args=(tmp_path / "weights.pt", out, kwargs)
        )
        child.start()
        # at least two batches still to go: the kill lands mid-run
        target = rng.randrange(n_batches - 1)
        _wait_for(lambda w=work, t=target: w.exists() and _done_batches(w) >= t, child)
        time.sleep(rng.uniform(0.0, batch_seconds))
        assert child.is_alive()
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode == -signal.SIGKILL and not out.exists()
        survived = _done_batches(work)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="radsynth.sample.work_store"):
            sample_shard(unet, BETAS, out, **kwargs)
        assert f"{work}: {survived} of {n_batches} batches done and verified" in caplog.messages
        result = read_store(out)
        assert all(np.array_equal(result[k], reference[k]) for k in reference), f"trial {trial}"
        assert not list(out.rglob("*.partial")) and not work.exists()
