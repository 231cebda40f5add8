import logging
from pathlib import Path

from radsynth.audit.pair_verdicts import merge_pair_verdicts
from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance
from radsynth.core.tables import write_table

with log_to(snakemake.log[0]):
    merged, disagreements = merge_pair_verdicts(
        Path(snakemake.input.memorization) / "pairs.csv",
        [Path(path) for path in snakemake.input.verdicts],
    )
    described = {
        **provenance(snakemake.config),
        "verdict_files": ";".join(snakemake.input.verdicts) or "none",
    }
    write_table(merged, Path(snakemake.output.merged), provenance=described)
    write_table(disagreements, Path(snakemake.output.disagreements), provenance=described)
    logging.info(
        "pair verdicts: %s; %d verdicts on pairs reviewers judged differently",
        merged["consensus"].value_counts().to_dict(),
        len(disagreements),
    )
