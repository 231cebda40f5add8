import json
import logging
from pathlib import Path

from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance
from radsynth.evaluate.selection import select_checkpoints
from radsynth.train.checkpoint_io import read_run_marker

with log_to(snakemake.log[0]):
    checkpoints = snakemake.params.checkpoints
    split, full = (
        read_run_marker(Path(path)).run_dir
        for path in (snakemake.input.split, snakemake.input.full)
    )
    selection = select_checkpoints(
        split / "checkpoints" / "index.csv",
        full / "checkpoints" / "index.csv",
        Path(snakemake.input.fid),
        Path(snakemake.output[0]),
        configured=checkpoints["selected"],
        convergence=checkpoints["convergence"],
        provenance=provenance(snakemake.config),
    )
    logging.info(
        "%s selection: %s", selection["mode"], ", ".join(e["label"] for e in selection["selected"])
    )
    logging.info(
        "configured and suggested checkpoints:\n%s", json.dumps(selection["comparison"], indent=2)
    )
