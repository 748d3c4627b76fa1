#!/usr/bin/env bash
# The sqlite3 shell 3.40 from Debian 12.
set -euo pipefail
dpkg -s sqlite3 >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends sqlite3
# The run wrapper (always refreshed: it is this folder's code).
mkdir -p /opt/pesto/runtimes/sqlite3
install -m 755 "$(dirname "$0")/run.sh" /opt/pesto/runtimes/sqlite3/run.sh
/usr/bin/sqlite3 -version
