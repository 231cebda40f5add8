import sys
from pathlib import Path

from radsynth.data.download import extract_archive, fetch_configured_archive

sys.stderr = open(snakemake.log[0], "w")
# The archive is in place (downloaded or placed by hand), so this only verifies it: a
# hand-placed file that does not match the configured size/checksum is refused here.
archive = fetch_configured_archive(
    Path(snakemake.input[0]),
    snakemake.params.spec,
    landing_page=snakemake.params.landing_page,
    settings=snakemake.params.download,
)
extract_archive(archive, Path(snakemake.output[0]))
