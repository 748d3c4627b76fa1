#!/usr/bin/env bash
# G++ 12 from Debian 12.
set -euo pipefail
if ! [ -x /usr/bin/g++ ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends g++ libc6-dev
fi
/usr/bin/g++ --version | head -n1
