#!/usr/bin/env bash
# Erlang/OTP 25 (erlang-base: erts, kernel, stdlib, escript) from Debian 12.
set -euo pipefail
dpkg -s erlang-base >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends erlang-base
echo "Erlang/OTP $(cat /usr/lib/erlang/releases/*/OTP_VERSION | head -n1)"
