#!/usr/bin/env bash
# PHP 8.2 CLI (+ mbstring) from Debian 12.
set -euo pipefail
need=()
for pkg in php8.2-cli php8.2-mbstring; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
[ ${#need[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
/usr/bin/php8.2 -n --version | head -n1
# Debian's security updates move the patch level: keep language.toml true.
have=$(/usr/bin/php8.2 -n -r 'echo PHP_VERSION;')
toml=$(sed -n 's/^version = "\(.*\)"/\1/p' "$(dirname "$0")/language.toml")
[ "$have" = "$toml" ] || echo "WARNING: PHP $have is installed but languages/php/language.toml says $toml: update it"
