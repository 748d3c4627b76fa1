#!/usr/bin/env bash
# Go 1.21 from bookworm-backports, plus a pre-built standard library.
#
# A cold `go build` of hello world compiles ~40 std packages (~10 s here).
# Since Go 1.20 the std archives live only in the build cache, which must be
# writable, so it cannot be shared read-only between runs. Instead we build
# std once, as root, into /opt/pesto/runtimes/go/pkg (GOFLAGS -pkgdir, with
# GODEBUG=installgoroot=all so `go install std` writes the archives); builds
# with the same flags find them up to date and only compile the user's code
# into their private GOCACHE. The flags here must match language.toml.
set -euo pipefail
goroot=/usr/lib/go-1.21
pkgdir=/opt/pesto/runtimes/go/pkg
if ! [ -x "$goroot/bin/go" ]; then
  if ! apt-cache policy golang-1.21-go | grep -q bookworm-backports; then
    cat > /etc/apt/sources.list.d/pesto-backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -qq
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -t bookworm-backports golang-1.21-go
fi
version=$("$goroot/bin/go" env GOVERSION)
export GO111MODULE=off GOTOOLCHAIN=local GOPROXY=off CGO_ENABLED=0
export GOFLAGS="-trimpath -pkgdir=$pkgdir" GODEBUG=installgoroot=all
if [ "$(cat "$pkgdir/.pesto-version" 2>/dev/null)" != "$version" ]; then
  echo "pre-building the Go standard library into $pkgdir (about a minute)"
  tmp=$(mktemp -d)
  rm -rf "$pkgdir"
  mkdir -p "$pkgdir"
  GOCACHE="$tmp/cache" GOPATH="$tmp/gopath" "$goroot/bin/go" install std
  rm -rf "$tmp"
  echo "$version" > "$pkgdir/.pesto-version"
  chmod -R a+rX,go-w /opt/pesto/runtimes/go
fi
# Check: a hello world with an empty cache must not rebuild std.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'package main\nimport "fmt"\nfunc main() { fmt.Println("ok") }\n' > "$tmp/main.go"
start=$(date +%s%N)
(cd "$tmp" && GOCACHE="$tmp/cache" GOPATH="$tmp/gopath" "$goroot/bin/go" build -o main .)
ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "$version; hello world built with an empty cache in ${ms} ms"
