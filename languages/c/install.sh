#!/usr/bin/env bash
# GCC 12 from Debian 12; C and C++ share it.
set -euo pipefail
if ! [ -x /usr/bin/gcc ] || ! [ -e /usr/include/stdio.h ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev
fi
/usr/bin/gcc --version | head -n1
