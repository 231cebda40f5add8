import sys
from pathlib import Path

from radsynth.data.download import fetch_configured_archive

sys.stderr = open(snakemake.log[0], "w")
fetch_configured_archive(
    Path(snakemake.output[0]),
    snakemake.params.spec,
    landing_page=snakemake.params.landing_page,
    settings=snakemake.params.download,
)
