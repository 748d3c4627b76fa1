#!/usr/bin/env bash
# Janet 1.35.2 built from the official source release (GitHub tag archive,
# pinned by SHA-256) with Debian 12's gcc, into /opt/pesto/runtimes/janet.
#
# There is no Janet in Debian 12 (libjanet-dev is in Debian 13 only, which
# this machine's apt does not reach), nor on PyPI or npm, so this needs
# GitHub. Offline: fetch the archive elsewhere, check it, and point
# PESTO_JANET_SOURCE at it.
set -euo pipefail
version=1.35.2
sha256=a0e8d56c6025988c8432353e7d67f2c2eb66404d233e6e8113430085dcb4f754
url="https://github.com/janet-lang/janet/archive/refs/tags/v$version.tar.gz"
dest=/opt/pesto/runtimes/janet
janet=$dest/bin/janet

if [ -x "$janet" ] && "$janet" -v 2>/dev/null | grep -q "^$version"; then
  echo "janet $version already installed in $dest"; exit 0
fi
if ! command -v curl >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl ca-certificates
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
src=${PESTO_JANET_SOURCE:-}
if [ -z "$src" ]; then
  src=$tmp/janet.tar.gz
  echo "downloading $url"
  if ! curl -fsSL --connect-timeout 15 --max-time 300 --retry 2 -o "$src" "$url"; then
    echo "janet: cannot download $url (GitHub is not reachable from here; set PESTO_JANET_SOURCE to a local copy)"
    exit 1
  fi
fi
if ! echo "$sha256  $src" | sha256sum --check --status -; then
  echo "janet: $src does not have the pinned SHA-256 $sha256"
  exit 1
fi
need=()
for pkg in gcc make libc6-dev; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
[ ${#need[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
tar -xzf "$src" -C "$tmp"
cd "$tmp/janet-$version"
make -j"$(nproc)" PREFIX="$dest" >/dev/null
rm -rf "$dest"
make install PREFIX="$dest" >/dev/null
chmod -R a+rX,go-w "$dest"
echo "janet $("$janet" -v) installed in $dest"
