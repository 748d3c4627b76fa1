#!/usr/bin/env bash
# Bun 1.x (runs TypeScript directly) from the npm registry: the official
# Linux x64 build @oven/bun-linux-x64, pinned with its SHA-512 in
# package-lock.json, into /opt/pesto/runtimes/typescript. The `bun` npm
# package would pick the build in a postinstall script; we run no scripts.
# That build needs AVX2: on an older CPU the -baseline build (same version)
# is installed instead. /opt/pesto/runtimes/typescript/bin/bun links the one
# in use.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest=/opt/pesto/runtimes/typescript
want=$(sed -n 's/.*"@oven\/bun-linux-x64": "\(.*\)".*/\1/p' "$here/package.json" | head -n1)
if [ -x "$dest/bin/bun" ] && [ "$("$dest/bin/bun" --version 2>/dev/null)" = "$want" ]; then
  echo "bun $want already installed in $dest"; exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm
fi
mkdir -p "$dest"
cp "$here/package.json" "$here/package-lock.json" "$dest/"
cd "$dest"
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
pkg=bun-linux-x64
if ! grep -qw avx2 /proc/cpuinfo; then
  pkg=bun-linux-x64-baseline
  npm install --no-save --ignore-scripts --no-audit --no-fund --loglevel=error "@oven/$pkg@$want"
fi
mkdir -p bin
ln -sfn "../node_modules/@oven/$pkg/bin/bun" bin/bun
chmod -R a+rX,go-w "$dest"
echo "bun $("$dest/bin/bun" --version) ($pkg) installed in $dest"
