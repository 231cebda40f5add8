#!/usr/bin/env bash
# Installs the Debian packages radsynth needs outside Python, for the needs named as arguments:
#   r         R: the statistics run in R through rpy2, which compiles against it, so it must
#             exist before pip runs (make demo and make test)
#   chromium  Chromium: browser tests of the offline rating form (make test only)
#   slurm     SLURM (slurmctld, slurmd, sbatch and the other client commands) and munge: the
#             one-node cluster of tests/test_slurm.py (make test and make slurm-test only)
# One apt-get call for everything missing; a no-op in well under a second when all is present.
# Usage: tools/ensure-system-deps.sh r [chromium] [slurm]
set -euo pipefail

packages=()
for need in "$@"; do
  case "$need" in
    r) command -v Rscript >/dev/null 2>&1 || packages+=(r-base-core r-base-dev) ;;
    chromium) command -v chromium >/dev/null 2>&1 || packages+=(chromium) ;;
    slurm) command -v slurmctld >/dev/null 2>&1 || packages+=(slurm-wlm)
           command -v munged >/dev/null 2>&1 || packages+=(munge) ;;
    *) echo "ensure-system-deps.sh: unknown need '$need' (known: r, chromium, slurm)" >&2; exit 2 ;;
  esac
done
[ ${#packages[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "radsynth needs these Debian packages: ${packages[*]}" >&2
  echo "Install them as root:  sudo apt-get update && sudo apt-get install -y ${packages[*]}" >&2
  exit 1
fi
echo "Installing Debian packages: ${packages[*]}" >&2
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}"
