#!/usr/bin/env bash
# beef 1.2.0 (a Brainfuck interpreter) from Debian 12.
set -euo pipefail
dpkg -s beef >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends beef
dpkg-query -W -f='beef ${Version}\n' beef
