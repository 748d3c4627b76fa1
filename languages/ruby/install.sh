#!/usr/bin/env bash
# Ruby 3.1 from Debian 12.
set -euo pipefail
dpkg -s ruby3.1 >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ruby3.1
/usr/bin/ruby3.1 --version
