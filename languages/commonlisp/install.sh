#!/usr/bin/env bash
# SBCL 2.2.9 from Debian 12.
set -euo pipefail
dpkg -s sbcl >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends sbcl
/usr/bin/sbcl --version
