#!/usr/bin/env bash
# Python 3.11 from Debian 12 (the same interpreter the server uses).
set -euo pipefail
if [ ! -x /usr/bin/python3 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3
fi
/usr/bin/python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version'
