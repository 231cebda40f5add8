import logging
from pathlib import Path

from radsynth.core.atomic import write_json_atomic
from radsynth.core.features import build_extractor
from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance
from radsynth.evaluate.metrics import fidelity_row
from radsynth.evaluate.table import checkpoint_record
from radsynth.sample.store import open_samples

with log_to(snakemake.log[0]):
    extractor_settings, metrics = snakemake.params.extractor, snakemake.params.metrics
    extractor = build_extractor(
        extractor_settings["name"],
        weights=Path(snakemake.input.weights) if snakemake.input.weights else None,
        antialias=extractor_settings["antialias"],
    )
    samples = open_samples([Path(store) for store in snakemake.input.shards])
    row = fidelity_row(
        samples.images(samples.global_indices),
        Path(snakemake.input.atlas),
        extractor,
        Path(snakemake.params.cache_dir),
        synthetic_name=f"FID set of {snakemake.wildcards.ckpt}",
        kid_subsets=metrics["kid_subsets"],
        kid_subset_size=metrics["kid_subset_size"],
        kid_seed=metrics["kid_seed"],
        nearest_k=metrics["prdc_nearest_k"],
        batch_size=snakemake.config["evaluate"]["batch_size"],
    )
    checkpoint = snakemake.params.checkpoint
    record = checkpoint_record(
        row,
        step=checkpoint * snakemake.config["training"]["checkpoint_every"],
        checkpoint=checkpoint,
        sampling=samples.attrs,
        synthetic_source=", ".join(snakemake.input.shards),
    )
    logging.info(
        "%s: FID %.3f, KID %.5f ± %.5f",
        snakemake.wildcards.ckpt,
        row.fid,
        row.kid_mean,
        row.kid_std,
    )
    write_json_atomic(
        Path(snakemake.output[0]), {**record, "provenance": provenance(snakemake.config)}
    )
