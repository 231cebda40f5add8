from pathlib import Path

from radsynth.core.logs import log_to
from radsynth.data.download import fetch_configured_archive

with log_to(snakemake.log[0]):
    csxa = snakemake.config["data"]["csxa"]  # operational settings: read at run time
    fetch_configured_archive(
        Path(snakemake.output[0]),
        snakemake.params.spec,
        landing_page=csxa["landing_page"],
        settings=csxa["download"],
    )
