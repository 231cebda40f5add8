import logging
from pathlib import Path

from radsynth.audit.encoders import offline_inception_encoder, vit_encoder
from radsynth.audit.memorization import audit_gathered_sets
from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance

with log_to(snakemake.log[0]):
    weights = snakemake.input.weights
    encoder = vit_encoder(Path(weights)) if weights else offline_inception_encoder()
    audit = snakemake.config["audit"]
    table = audit_gathered_sets(
        Path(snakemake.input.atlas),
        Path(snakemake.input.classifier),
        [Path(manifest) for manifest in snakemake.input.manifests],
        encoder,
        top=snakemake.params.top,
        # Operational: memory bounds, no effect on the pairs.
        chunk_size=audit["chunk_size"],
        batch_size=audit["batch_size"],
        out_dir=Path(snakemake.output[0]),
        cache_dir=Path(snakemake.params.cache_dir),
        provenance=provenance(snakemake.config),
    )
    logging.info(
        "top pairs (%s):\n%s", encoder.description.name, table.head(10).to_string(index=False)
    )
