#!/usr/bin/env bash
# Snakemake runs this once after creating the env, from the workflow's working directory
# (the repository root): install the radsynth package without touching the env's pinned deps.
set -euo pipefail
python -m pip install --no-deps --editable .
