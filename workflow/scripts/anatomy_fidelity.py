from pathlib import Path

from radsynth.anatomy.fidelity_stage import SetLandmarks, write_anatomy_fidelity
from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance
from radsynth.evaluate.table import read_fid_table

with log_to(snakemake.log[0]):
    fidelity = snakemake.params.fidelity
    write_anatomy_fidelity(
        Path(snakemake.input.held_out),
        [
            SetLandmarks(name, step, Path(path))
            for (name, step), path in zip(snakemake.params.sets, snakemake.input.sets, strict=True)
        ],
        Path(snakemake.input.floor),
        [Path(path) for path in snakemake.input.floor_halves],
        [Path(path) for path in snakemake.input.fd_rows],
        read_fid_table(Path(snakemake.input.fid_table)),
        Path(snakemake.output.fidelity),
        Path(snakemake.output.fd),
        n_boot=fidelity["n_boot"],
        level=fidelity["level"],
        seed=fidelity["seed"],
        provenance=provenance(snakemake.config),
    )
