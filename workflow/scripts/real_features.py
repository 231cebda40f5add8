import logging
from pathlib import Path

from radsynth.core.atomic import write_json_atomic
from radsynth.core.features import build_extractor
from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance
from radsynth.evaluate.metrics import atlas_features

with log_to(snakemake.log[0]):
    settings = snakemake.params.extractor
    extractor = build_extractor(
        settings["name"],
        weights=Path(snakemake.input.weights) if snakemake.input.weights else None,
        antialias=settings["antialias"],
    )
    atlas = atlas_features(
        Path(snakemake.input.atlas),
        extractor,
        Path(snakemake.params.cache_dir),
        batch_size=snakemake.config["evaluate"]["batch_size"],
    )
    logging.info("%d atlas images -> %s", len(atlas.features), atlas.cache_file)
    write_json_atomic(
        Path(snakemake.output[0]),
        {
            "atlas": snakemake.input.atlas,
            "atlas_digest": atlas.digest,
            "n_real": len(atlas.features),
            "extractor": extractor.description.as_dict(),
            "cache_file": str(atlas.cache_file),
            "provenance": provenance(snakemake.config),
        },
    )
