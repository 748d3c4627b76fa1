#!/usr/bin/env bash
# Lua 5.4 from Debian 12.
set -euo pipefail
dpkg -s lua5.4 >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends lua5.4
/usr/bin/lua5.4 -v
