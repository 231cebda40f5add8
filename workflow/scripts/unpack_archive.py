from pathlib import Path

from radsynth.core.logs import log_to
from radsynth.data.download import extract_archive, fetch_configured_archive

with log_to(snakemake.log[0]):
    csxa = snakemake.config["data"]["csxa"]  # operational settings: read at run time
    # The archive is in place (downloaded or placed by hand), so this only verifies it: a
    # hand-placed file that does not match the configured size/checksum is refused here.
    archive = fetch_configured_archive(
        Path(snakemake.input[0]),
        snakemake.params.spec,
        landing_page=csxa["landing_page"],
        settings=csxa["download"],
    )
    extract_archive(archive, Path(snakemake.output[0]))
