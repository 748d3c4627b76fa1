#!/usr/bin/env bash
# Janet 1.42.1 into /opt/pesto/runtimes/janet/bin/janet.
#
# Debian 12 has no Janet. Two routes, both giving the same 1.42.1 and both
# pinned by SHA-256:
#
# 1. (works from here) Debian's own build: libjanet-dev 1.42.1-1 from
#    Debian unstable, fetched from the Debian archive. Its libjanet.a holds
#    the whole interpreter, including the command-line client (`main`), so
#    linking it with Debian 12's gcc gives the `janet` binary. It was built
#    against glibc 2.41, whose headers turn strtol() into __isoc23_strtol(),
#    absent from Debian 12's glibc 2.36: isoc23_shim.c supplies it. (The
#    prebuilt `janet` package needs glibc >= 2.38 and cannot run here.)
# 2. (fallback) the official source release from GitHub, built with make.
#    Its tarball has the same SHA-256 as Debian's janet_1.42.1.orig.tar.gz.
#
# Offline: PESTO_JANET_DEB=/path/libjanet-dev_1.42.1-1_amd64.deb or
# PESTO_JANET_SOURCE=/path/janet-1.42.1.tar.gz (checked the same way).
# When Debian unstable moves past 1.42.1-1, its file leaves the archive:
# bump the version and both checksums together.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=1.42.1
deb_url=http://deb.debian.org/debian/pool/main/j/janet/libjanet-dev_1.42.1-1_amd64.deb
deb_sha256=ade826ece0fa4a2a440376a46dad35f8088821d16981d50d934b506d6aaa465a
src_url="https://github.com/janet-lang/janet/archive/refs/tags/v$version.tar.gz"
src_sha256=2391f8c6565742dad1c5e8872ad1d570b64a239d5d1ef11a188fc6b400457a04
dest=/opt/pesto/runtimes/janet
janet=$dest/bin/janet

if [ -x "$janet" ] && "$janet" -v 2>/dev/null | grep -q "^$version"; then
  echo "janet $version already installed in $dest"; exit 0
fi
if [ "$(dpkg --print-architecture)" != amd64 ]; then
  echo "janet: no pinned build for $(dpkg --print-architecture) (only amd64)"; exit 1
fi
need=()
for pkg in gcc libc6-dev make curl ca-certificates; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
[ ${#need[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fetch() {  # fetch URL SHA256 OUT [override-file]
  local url=$1 sum=$2 out=$3 local_file=${4:-}
  if [ -n "$local_file" ]; then cp "$local_file" "$out"
  else curl -fsSL --connect-timeout 15 --max-time 300 --retry 1 -o "$out" "$url" 2>"$tmp/curl.err" || return 1
  fi
  if ! echo "$sum  $out" | sha256sum --check --status -; then
    echo "janet: ${local_file:-$url} does not have the pinned SHA-256 $sum"; exit 1
  fi
}

built=""
if [ -z "${PESTO_JANET_SOURCE:-}" ] && fetch "$deb_url" "$deb_sha256" "$tmp/libjanet-dev.deb" "${PESTO_JANET_DEB:-}"; then
  echo "linking Janet $version from Debian's libjanet-dev ($deb_url)"
  dpkg-deb -x "$tmp/libjanet-dev.deb" "$tmp/deb"
  gcc -O2 -o "$tmp/janet" "$here/isoc23_shim.c" "$tmp/deb/usr/lib/x86_64-linux-gnu/libjanet.a" \
    -lm -ldl -lpthread -rdynamic
  rm -rf "$dest.new"
  mkdir -p "$dest.new/bin" "$dest.new/lib/janet" "$dest.new/include"
  install -m 755 "$tmp/janet" "$dest.new/bin/janet"
  cp -r "$tmp/deb/usr/include/janet" "$dest.new/include/"
  built=deb
elif fetch "$src_url" "$src_sha256" "$tmp/janet.tar.gz" "${PESTO_JANET_SOURCE:-}"; then
  echo "building Janet $version from the official source release"
  tar -xzf "$tmp/janet.tar.gz" -C "$tmp"
  make -C "$tmp/janet-$version" -j"$(nproc)" PREFIX="$dest.new" >/dev/null
  rm -rf "$dest.new"
  make -C "$tmp/janet-$version" install PREFIX="$dest.new" >/dev/null
  mkdir -p "$dest.new/lib/janet"
  built=source
else
  echo "janet: cannot download $deb_url nor $src_url ($(tail -n1 "$tmp/curl.err" 2>/dev/null)); set PESTO_JANET_DEB or PESTO_JANET_SOURCE to a local copy"
  exit 1
fi
chmod -R a+rX,go-w "$dest.new"
rm -rf "$dest"
mv "$dest.new" "$dest"
echo "janet $("$janet" -v) installed in $dest (from $built)"
