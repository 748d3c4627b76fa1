#!/usr/bin/env bash
# OpenJDK 17 (javac + java) from Debian 12.
set -euo pipefail
jdk=/usr/lib/jvm/java-17-openjdk-amd64
if ! [ -x "$jdk/bin/javac" ]; then
  # The postinst of some Java packages wants this directory (it is missing
  # in slim images).
  mkdir -p /usr/share/man/man1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openjdk-17-jdk-headless
fi
"$jdk/bin/java" -Xshare:auto -version 2>&1 | head -n1
