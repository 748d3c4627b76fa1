#!/usr/bin/env bash
# Julia 1.10.6 (LTS): the official Linux x86_64 binary release, pinned by
# SHA-256, into /opt/pesto/runtimes/julia.
#
# There is no Julia in Debian 12 (or bookworm-backports), and no PyPI or npm
# package ships the binary (juliaup/jill/juliapkg all download it from
# julialang-s3 themselves), so this needs the release server. Offline: fetch
# the tarball elsewhere, check it, and point PESTO_JULIA_TARBALL at it.
set -euo pipefail
version=1.10.6
sha256=8b53429e17585c66476b39f2b2279da207ea0f310c55db38f3410bdd4f6a3d49
url="https://julialang-s3.julialang.org/bin/linux/x64/${version%.*}/julia-$version-linux-x86_64.tar.gz"
dest=/opt/pesto/runtimes/julia
julia=$dest/bin/julia

if [ -x "$julia" ] && [ "$("$julia" --startup-file=no --version 2>/dev/null)" = "julia version $version" ]; then
  echo "julia $version already installed in $dest"; exit 0
fi
if [ "$(uname -m)" != x86_64 ]; then
  echo "julia: no pinned release for $(uname -m) (only x86_64)"; exit 1
fi
if ! command -v curl >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl ca-certificates
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tarball=${PESTO_JULIA_TARBALL:-}
if [ -z "$tarball" ]; then
  tarball=$tmp/julia.tar.gz
  echo "downloading $url"
  if ! curl -fsSL --connect-timeout 15 --max-time 900 --retry 2 -o "$tarball" "$url"; then
    echo "julia: cannot download $url (the Julia release server is not reachable from here; set PESTO_JULIA_TARBALL to a local copy)"
    exit 1
  fi
fi
if ! echo "$sha256  $tarball" | sha256sum --check --status -; then
  echo "julia: $tarball does not have the pinned SHA-256 $sha256"
  exit 1
fi
rm -rf "$dest.new"
mkdir -p "$dest.new"
tar -xzf "$tarball" -C "$dest.new" --strip-components 1 --no-same-owner
chmod -R a+rX,go-w "$dest.new"
rm -rf "$dest"
mv "$dest.new" "$dest"
"$julia" --startup-file=no --version
