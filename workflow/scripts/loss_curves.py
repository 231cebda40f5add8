from pathlib import Path

from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance
from radsynth.train.checkpoint_io import read_run_marker
from radsynth.train.figures import plot_loss_curves
from radsynth.train.labels import read_selected_checkpoints

with log_to(snakemake.log[0]):
    run_dir = read_run_marker(Path(snakemake.input.done)).run_dir
    plot_loss_curves(
        run_dir / "loss_log.csv",
        run_dir / "checkpoints" / "index.csv",
        Path(snakemake.output[0]),
        title=f"DDPM training loss, {snakemake.wildcards.run} run",
        smoothing_window=snakemake.params.smoothing,
        provenance=provenance(snakemake.config),
        selected=sorted(read_selected_checkpoints(Path(snakemake.input.selection)).values()),
    )
