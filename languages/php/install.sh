#!/usr/bin/env bash
# PHP 8.2 CLI from Debian 12.
set -euo pipefail
dpkg -s php8.2-cli >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends php8.2-cli
/usr/bin/php8.2 -n --version | head -n1
