#!/usr/bin/env bash
# Installs Pesto into ./.venv and the chosen languages, on Debian 12, as root.
# Idempotent: run it again to add languages or pick up a new checkout.
#
#   ./install.sh                         # Pesto + python,c
#   ./install.sh --languages all         # every language under languages/
#   ./install.sh --languages python,java
#   ./install.sh --languages none        # Pesto only
#   ./install.sh --no-link               # leave /usr/local/bin/pesto as it is
#                                        # (also PESTO_NO_LINK=1; tests use it)
#
# Any clone path works (root's 0700 home, spaces, symlinks): runs never read
# the checkout. What they run is installed world-readable under /usr and
# /opt/pesto/runtimes; the exec helper is built here but started as root.
set -uo pipefail
# What this script creates (/opt/pesto/runtimes/<id>, the helper) must be
# readable by the run uids whatever root's umask is (077 on hardened hosts).
umask 022

here=$(cd "$(dirname "$0")" && pwd)
languages="python,c"
link=1
[ "${PESTO_NO_LINK:-0}" = 1 ] && link=0
while [ $# -gt 0 ]; do
  case "$1" in
    --languages) languages="$2"; shift 2 ;;
    --languages=*) languages="${1#*=}"; shift ;;
    --no-link) link=0; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (it installs Debian packages and sets up the sandbox)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt_updated=/tmp/.pesto-apt-updated
if [ ! -e "$apt_updated" ] || [ -n "$(find "$apt_updated" -mmin +360 2>/dev/null)" ]; then
  apt-get update -qq && touch "$apt_updated"
fi
# The server and the Python runtime both use Debian's /usr/bin/python3; the
# sandbox's exec helper (pesto/sandbox/pesto-exec.c) is built with gcc,
# statically against musl (musl-tools) where it can: that binary starts in
# a third of the CPU time of a glibc one, and every stage starts it.
need=()
for pkg in python3 python3-venv ca-certificates procps gcc libc6-dev musl-tools; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get install -y -qq --no-install-recommends "${need[@]}" || exit 1
fi

set -e
if [ ! -x "$here/.venv/bin/python" ]; then
  /usr/bin/python3 -m venv "$here/.venv"
fi
"$here/.venv/bin/pip" install -q --disable-pip-version-check -e "$here[test]"
if [ "$link" = 1 ]; then
  ln -sf "$here/.venv/bin/pesto" /usr/local/bin/pesto
fi
# Build the exec helper now (it is named by a hash of its source). The
# image's first, dependencies-only step has no pesto/ yet.
if [ -f "$here/pesto/sandbox/pesto-exec.c" ]; then
  "$here/.venv/bin/python" -c 'from pesto.sandbox import helper; print("exec helper:", helper.find())'
fi
set +e

if [ "$languages" = all ]; then
  languages=$(cd "$here/languages" && ls -d */ | tr -d / | paste -sd, -)
elif [ "$languages" = none ]; then
  languages=""
fi

declare -A result
failed=0
IFS=, read -ra ids <<< "$languages"
for id in "${ids[@]}"; do
  [ -n "$id" ] || continue
  script="$here/languages/$id/install.sh"
  if [ ! -f "$script" ]; then
    result[$id]="FAILED: no such language folder"; failed=1; continue
  fi
  echo "== installing $id"
  log=$(mktemp)
  if bash "$script" >"$log" 2>&1; then
    result[$id]="installed"
  else
    result[$id]="FAILED: $(tail -n 1 "$log")"; failed=1
  fi
  cat "$log"; rm -f "$log"
done

echo
echo "language      result"
echo "------------  ------"
for id in "${ids[@]}"; do
  [ -n "$id" ] && printf '%-12s  %s\n' "$id" "${result[$id]}"
done
# A language that cannot be had here is reported, not fatal: Pesto serves
# the ones that installed. PESTO_STRICT_INSTALL=1 makes it fatal.
if [ "$failed" = 1 ] && [ "${PESTO_STRICT_INSTALL:-0}" = 1 ]; then
  exit 1
fi
exit 0
