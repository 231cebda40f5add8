from pathlib import Path

from radsynth.anatomy.fidelity_stage import write_real_floor
from radsynth.core.atomic import read_json_object
from radsynth.core.features import ExtractorDescription
from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance
from radsynth.evaluate.metrics import read_cached_features

with log_to(snakemake.log[0]):
    # the evaluate stage's Inception features of every atlas image, through its cache's reader
    record = read_json_object(Path(snakemake.input.real_features), "real-features record")
    write_real_floor(
        Path(snakemake.input.model),
        Path(snakemake.input.facing),
        Path(snakemake.input.atlas),
        Path(snakemake.input.atlas_features),
        Path(snakemake.output.record),
        [Path(path) for path in snakemake.output.halves],
        set_size=snakemake.params.set_size,
        seed=snakemake.params.seed,
        inception_features=read_cached_features(
            Path(record["cache_file"]),
            record["atlas_digest"],
            ExtractorDescription(**record["extractor"]),
        ),
        inception_extractor=record["extractor"],
        curvature_thresholds_deg=snakemake.params.curvature_thresholds_deg,
        batch_size=snakemake.config["anatomy"]["batch_size"],
        provenance=provenance(snakemake.config),
    )
