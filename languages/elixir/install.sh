#!/usr/bin/env bash
# Elixir 1.14 from Debian 12 (on Debian's Erlang/OTP 25).
set -euo pipefail
dpkg -s elixir >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends elixir
/usr/lib/elixir/bin/elixir --version 2>/dev/null | tail -n1
