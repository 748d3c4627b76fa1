#!/usr/bin/env bash
# OpenJDK 17 (javac + java) from Debian 12, plus a class-data-sharing
# archive of javac's classes (/opt/pesto/runtimes/java/javac.jsa) that
# roughly halves javac's start-up; compile.py uses it when present.
set -euo pipefail
jdk=/usr/lib/jvm/java-17-openjdk-amd64
dest=/opt/pesto/runtimes/java
toml=$(sed -n 's/^version = "\(.*\)"/\1/p' "$(dirname "$0")/language.toml")
matches() {
  local have
  have=$(sed -n 's/^JAVA_VERSION="\(.*\)"/\1/p' "$jdk/release" 2>/dev/null)
  case $have in "$toml"|"$toml".*) return 0 ;; *) return 1 ;; esac
}
# Install, or upgrade an older JDK 17 already on the machine (Debian's
# security updates move the patch level) so that language.toml stays true.
if ! [ -x "$jdk/bin/javac" ] || ! matches; then
  # The postinst of some Java packages wants this directory (it is missing
  # in slim images).
  mkdir -p /usr/share/man/man1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openjdk-17-jdk-headless
fi
# The compile and run wrappers (always refreshed: they are this folder's code).
mkdir -p "$dest"
install -m 755 "$(dirname "$0")/compile.py" "$(dirname "$0")/run.sh" "$dest/"
version=$("$jdk/bin/java" -Xshare:auto -version 2>&1 | head -n1)
if [ "$(cat "$dest/javac.jsa.version" 2>/dev/null)" != "$version" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$dest"
  printf 'import java.util.*;\npublic class Warm { public static void main(String[] a) { List<String> l = new ArrayList<>(); l.add("x"); System.out.println(l); } }\n' > "$tmp/Warm.java"
  rm -f "$dest/javac.jsa"
  # The same JVM flags as compile.py (the archive must match the GC).
  "$jdk/bin/javac" -J-Xmx384m -J-XX:+UseSerialGC -J-XX:-UsePerfData -J-XX:TieredStopAtLevel=1 \
    "-J-XX:ArchiveClassesAtExit=$dest/javac.jsa" -d "$tmp/classes" "$tmp/Warm.java" >/dev/null 2>&1 \
    || echo "java: could not make the javac CDS archive; javac will start more slowly"
  echo "$version" > "$dest/javac.jsa.version"
  chmod -R a+rX,go-w "$dest"
fi
echo "$version"
matches || echo "WARNING: $(sed -n 's/^JAVA_VERSION=//p' "$jdk/release") is installed but languages/java/language.toml says $toml: update it"
