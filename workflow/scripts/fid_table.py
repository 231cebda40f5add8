from pathlib import Path

from radsynth.core.atomic import read_json_object
from radsynth.core.logs import log_to
from radsynth.core.provenance import provenance
from radsynth.evaluate.table import plot_fid_curve, write_fid_table

with log_to(snakemake.log[0]):
    records = [read_json_object(Path(path), "FID row") for path in snakemake.input]
    for record in records:
        record.pop("provenance")
    record_provenance = provenance(snakemake.config)
    table = write_fid_table(records, Path(snakemake.output.table), provenance=record_provenance)
    plot_fid_curve(
        table,
        Path(snakemake.output.figure),
        provenance=record_provenance,
        title="FID through training, full-data run",
    )
