"""job_memory_mb against the measurements it was fitted to (radsynth/core/resources.py's
docstring: peak RSS on the CPU), and the host's memory and GPUs as the local profile reads them.

Every expected number is worked out by hand from the measured values, not by the code."""

import psutil
import pytest
import yaml
from conftest import REPO

from radsynth.core.resources import (
    activation_units,
    cgroup_memory_limits,
    host_gpu_count,
    host_memory_mb,
    job_memory_mb,
    landmark_activation_units,
    parameter_units,
)

#: Measured: imports and Snakemake's preamble; the paper network's training line (2,492 MB +
#: 2,294 MB per 256 px image, over 784 MB of imports) and inference line (1,217 + 296 MB).
JOB_BASE, IMPORTS = 900, 784
TRAIN_FIXED, TRAIN_PER_IMAGE = 2492 - IMPORTS, 2294
INFER_FIXED, INFER_PER_IMAGE = 1217 - IMPORTS, 296
#: CSXA's 4,963 images of 256 x 256 bytes, held twice (MB).
CSXA_ATLAS_256 = 2 * 4963 * 256 * 256 / 2**20


def load(name):
    return yaml.safe_load((REPO / "config" / name).read_text())


@pytest.fixture
def paper():
    return load("csxa.yaml")


def test_the_paper_network_in_units():
    model = load("csxa.yaml")["model"]
    assert activation_units(model) == 64 * (1 + 2 / 4 + 4 / 16 + 8 / 64) == 120
    assert parameter_units(model) == 64**2 + 128**2 + 256**2 + 512**2 == 348160
    demo = load("config.yaml")["model"]
    assert activation_units(demo) == 16 + 32 / 4 + 64 / 16 == 28
    assert parameter_units(demo) == 16**2 + 32**2 + 64**2 == 5376


def test_a_paper_training_job_needs_its_validation_pass_at_256_px(paper):
    # A step at batch 8 (8 x 2,294 = 18,352 MB) needs less than validation at 64 (18,944 MB).
    expected = JOB_BASE + TRAIN_FIXED + CSXA_ATLAS_256 + 64 * INFER_PER_IMAGE
    assert expected == pytest.approx(22172.4, abs=0.1)
    assert job_memory_mb(paper, "train") == 22200
    paper["training"]["val_batch_size"] = 8
    assert job_memory_mb(paper, "train") == 21600  # 900 + 1,708 + 620.4 + 18,352 = 21,580.4


def test_two_paper_training_jobs_do_not_fit_24_gb_one_does(paper):
    assert job_memory_mb(paper, "train") <= 24000 < 2 * job_memory_mb(paper, "train")


def test_training_memory_follows_batch_and_pixels(paper):
    paper["model"]["sample_size"] = paper["preprocess"]["size"] = 128
    atlas = CSXA_ATLAS_256 / 4
    validation = 64 * INFER_PER_IMAGE / 4  # 4,736 MB: a quarter of the pixels
    assert job_memory_mb(paper, "train") == 7500  # 900 + 1,708 + 155.1 + 4,736 = 7,499.1
    paper["training"]["batch_size"] = 16
    step = 16 * TRAIN_PER_IMAGE / 4  # 9,176 MB, now above the validation pass
    assert step > validation
    assert job_memory_mb(paper, "train") == 12000  # 900 + 1,708 + 155.1 + 9,176 = 11,939.1
    assert JOB_BASE + TRAIN_FIXED + atlas + step == pytest.approx(11939.1, abs=0.1)


def test_a_paper_sampling_shard_holds_one_batch_of_64(paper):
    assert JOB_BASE + INFER_FIXED + 64 * INFER_PER_IMAGE == 20277
    assert job_memory_mb(paper, "sample_shard") == 20300
    paper["sampling"]["batch_size"] = 16
    assert job_memory_mb(paper, "sample_shard") == 6100  # 900 + 433 + 4,736 = 6,069


#: max_rss of the demo's jobs in their Snakemake benchmarks (a full `make demo` run on this
#: machine's 2 cores): what the estimates must cover.
DEMO_BENCHMARK_MAX_RSS = {
    "train": 934,
    "real_features": 1617,
    "train_facing": 764,
    "fit_plausibility": 595,
    # the anatomy stage's and the screen evaluation's jobs (the highest over two demo runs)
    "landmark_train": 983,
    "landmark_evaluation": 906,
    "utility_students": 962,
    "set_landmarks": 909,
    "atlas_landmark_features": 889,
    "landmark_fd": 859,
    "real_floor": 1133,
    "two_sample": 915,
    "screen_evaluation": 932,
}


@pytest.mark.parametrize("rule", sorted(DEMO_BENCHMARK_MAX_RSS))
def test_the_demo_estimates_cover_the_demo_jobs_measured_peaks(rule):
    estimate = job_memory_mb(load("config.yaml"), rule)
    assert DEMO_BENCHMARK_MAX_RSS[rule] <= estimate <= DEMO_BENCHMARK_MAX_RSS[rule] + 600


def test_an_unknown_rule_is_named(paper):
    with pytest.raises(ValueError, match="no memory estimate for rule 'gather_samples'"):
        job_memory_mb(paper, "gather_samples")


def test_host_memory_is_at_most_the_physical_memory():
    assert 0 < host_memory_mb() <= psutil.virtual_memory().total // 2**20


@pytest.mark.parametrize(("visible", "count"), [("0,1", 2), ("3", 1), ("", 0)])
def test_gpus_hidden_by_cuda_visible_devices_are_not_counted(monkeypatch, visible, count):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert host_gpu_count() == count


def test_the_paper_memorization_audit_holds_every_audited_image(paper):
    # ViT: 1,151 MB at no batch (1,354 - 8 x 25.375) over 683 MB of imports, 25.375 MB per image
    # of imagededup's 64; the atlas; 3 checkpoints x (1,000 + 8,000) images of 64 KiB, twice.
    vit = 1354 - 8 * 25.375 - 683 + 64 * 25.375
    synthetic = 2 * 3 * 9000 * 256 * 256 / 2**20
    assert JOB_BASE + vit + CSXA_ATLAS_256 + synthetic == pytest.approx(6987.4, abs=0.1)
    assert job_memory_mb(paper, "memorization_audit") == 7000


def test_cgroup_memory_limits_v2_and_v1(tmp_path):
    proc = tmp_path / "cgroup"
    root = tmp_path / "sys"
    proc.write_text("0::/user.slice/job42\n")
    (root / "user.slice/job42").mkdir(parents=True)
    (root / "user.slice/job42/memory.max").write_text("8589934592\n")
    assert cgroup_memory_limits(proc, root) == [8 * 2**30]
    (root / "user.slice/job42/memory.max").write_text("max\n")
    assert cgroup_memory_limits(proc, root) == []
    # v1, as a SLURM allocation's cgroup seen from inside a container: the group's own file is
    # not mounted, the root's is.
    proc.write_text("4:memory:/slurm/uid_0/job_7\n3:cpuset:/\n")
    (root / "memory").mkdir()
    (root / "memory/memory.limit_in_bytes").write_text("4294967296\n")
    assert cgroup_memory_limits(proc, root) == [4 * 2**30]
    assert cgroup_memory_limits(tmp_path / "absent", root) == []


#: Measured over 833 MB of imports at 256 px with the paper preset's anatomy settings: the
#: landmark network's training line (1,289 / 1,869 MB at batch 4 / 16: 48.33 MB per image
#: above 1,095.67 MB) and inference line (1,159 / 1,758 MB at 16 / 64: 12.479 MB per image above
#: 959.33 MB); the two-sample classifier's (1,365 / 2,111 MB at 8 / 32; 1,127 / 1,561 MB
#: scoring 16 / 64).
ANATOMY_IMPORTS = 833
LANDMARK_TRAIN_FIXED, LANDMARK_TRAIN_PER_IMAGE = 1289 - 4 * 580 / 12 - ANATOMY_IMPORTS, 580 / 12
LANDMARK_INFER_FIXED, LANDMARK_INFER_PER_IMAGE = 1159 - 16 * 599 / 48 - ANATOMY_IMPORTS, 599 / 48


def test_the_landmark_networks_in_units():
    # the stem's 64 channels at twice the heatmap's side, each stage's channels with the
    # pyramid's, a quarter of the cells a level down, and the head
    paper = load("csxa.yaml")["anatomy"]["model"]
    assert landmark_activation_units(paper) == 4 * 64 + 192 + 256 / 4 + 384 / 16 + 640 / 64 + 128
    assert landmark_activation_units(paper) == 674
    demo = load("config.yaml")["anatomy"]["model"]
    assert landmark_activation_units(demo) == 4 * 64 + 128 + 192 / 4 + 320 / 16 + 64 == 516


def test_a_paper_landmark_training_job_needs_its_validation_pass(paper):
    # The validation pass at anatomy.batch_size 64 (798.67 MB) outweighs a step at batch 16
    # (773.33 MB); the atlas is held twice.
    assert LANDMARK_TRAIN_FIXED == pytest.approx(262.67, abs=0.01)
    assert 64 * LANDMARK_INFER_PER_IMAGE > 16 * LANDMARK_TRAIN_PER_IMAGE
    expected = JOB_BASE + LANDMARK_TRAIN_FIXED + CSXA_ATLAS_256 + 64 * LANDMARK_INFER_PER_IMAGE
    assert expected == pytest.approx(2581.7, abs=0.1)
    assert job_memory_mb(paper, "landmark_train") == 2600
    paper["anatomy"]["training"]["batch_size"] = 32  # a step of 1,546.67 MB
    assert job_memory_mb(paper, "landmark_train") == 3400  # 900 + 262.67 + 620.4 + 1,546.67


def test_a_finer_landmark_stem_quadruples_the_activations(paper):
    # stem stride 2: 128 x 128 heatmap cells instead of 64 x 64 (measured at 128 px: 1,761 /
    # 1,742 MB against four times the stride-4 activations' 1,869 / 1,758)
    paper["anatomy"]["model"]["stem_stride"] = 2
    validation = 4 * 64 * LANDMARK_INFER_PER_IMAGE  # 3,194.67 MB
    assert JOB_BASE + LANDMARK_TRAIN_FIXED + CSXA_ATLAS_256 + validation == pytest.approx(
        4977.7, abs=0.1
    )
    assert job_memory_mb(paper, "landmark_train") == 5000


def test_the_paper_smoke_landmark_job_is_covered(paper):
    # The paper preset on 20 demo phantoms at 256 px: its landmark_train job peaked at 1,898 MB
    # in its Snakemake benchmark; 900 + 262.67 + 2.5 (20 images twice) + 798.67 = 1,963.8.
    paper["data"]["source"] = "demo"
    paper["data"]["demo"] = {"n_images": 20}
    assert 1898 <= job_memory_mb(paper, "landmark_train") == 2000


def test_paper_anatomy_jobs_hold_the_atlas_and_their_sets(paper):
    inference = LANDMARK_INFER_FIXED + 64 * LANDMARK_INFER_PER_IMAGE  # 925 MB
    assert inference == pytest.approx(925.0, abs=0.01)
    # the utility students: the teacher's job and 4,000 utility images twice (500 MB)
    assert job_memory_mb(paper, "utility_students") == 3100  # 2,581.7 + 500 = 3,081.7
    # one set at a time: the large set's 8,000 images twice (1,000 MB)
    assert job_memory_mb(paper, "set_landmarks") == 2900  # 900 + 925 + 1,000
    # the 7,250-image FID set twice (906.25 MB)
    assert job_memory_mb(paper, "landmark_fd") == 2800  # 900 + 925 + 906.25 = 2,731.25
    # the facing classifier (100), the atlas, its cached 4,963 x 2,048 float64 features
    # (77.55 MB): 900 + 100 + 925 + 620.4 + 77.55 = 2,622.9
    assert job_memory_mb(paper, "real_floor") == 2700
    # the atlas with a left-facing copy of its train rows: 900 + 100 + 925 + 620.4 + 310.2
    assert job_memory_mb(paper, "screen_evaluation") == 2900


def test_the_paper_two_sample_job_trains_at_batch_32(paper):
    # training at 32: 1,365 - 8 x 31.083 - 833 + 32 x 31.083 = 1,278 MB, above scoring 64 images
    # (1,127 - 16 x 9.042 - 833 + 64 x 9.042 = 728 MB); the atlas and a FID set
    train = 1365 - 8 * 746 / 24 - ANATOMY_IMPORTS + 32 * 746 / 24
    assert train == pytest.approx(1278.0, abs=0.01)
    assert JOB_BASE + train + CSXA_ATLAS_256 + 906.25 == pytest.approx(3704.6, abs=0.1)
    assert job_memory_mb(paper, "two_sample") == 3800
    paper["preprocess"]["size"] = 128  # a quarter of the pixels and of the images' bytes
    # 900 + 283.33 + 8 x 31.083 + 155.1 + 226.6 = 1,813.7
    assert job_memory_mb(paper, "two_sample") == 1900


def test_anatomy_tables_are_small_jobs(paper):
    for rule in ["anatomy_fidelity", "anatomy_figure", "two_sample_table", "utility_figure"]:
        assert job_memory_mb(paper, rule) == JOB_BASE + 100
