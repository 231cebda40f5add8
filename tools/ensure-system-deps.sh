#!/usr/bin/env bash
# Installs the Debian packages radsynth needs outside Python: R (statistics through rpy2; rpy2
# compiles against it, so it must exist before pip runs) and Chromium (browser tests of the
# offline rating form). A no-op in well under a second when both are present.
set -euo pipefail

packages=()
command -v Rscript >/dev/null 2>&1 || packages+=(r-base-core r-base-dev)
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
[ ${#packages[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "radsynth needs these Debian packages: ${packages[*]}" >&2
  echo "Install them as root:  sudo apt-get update && sudo apt-get install -y ${packages[*]}" >&2
  exit 1
fi
echo "Installing Debian packages: ${packages[*]}" >&2
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}"
