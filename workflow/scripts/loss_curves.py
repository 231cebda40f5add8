import sys
from pathlib import Path

from radsynth.core.provenance import provenance
from radsynth.train.figures import plot_loss_curves

sys.stderr = open(snakemake.log[0], "w")
run_dir = Path(snakemake.params.run_dir)
plot_loss_curves(
    run_dir / "loss_log.csv",
    run_dir / "checkpoints" / "index.csv",
    Path(snakemake.output[0]),
    title=f"DDPM training loss, {snakemake.wildcards.run} run",
    smoothing_window=snakemake.params.smoothing,
    provenance=provenance(snakemake.config),
    selected=snakemake.params.selected,
)
