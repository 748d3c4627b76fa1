#!/bin/sh
# Run stage for Java: run.sh MEMORY_MB [program args...]
# The class to run was found by compile.py and written to .pesto-main-class
# (by the sandboxed compile stage: it is checked, then passed as one argv
# element, never evaluated). The heap is 3/4 of the run's memory limit; the
# rest is for metaspace, code cache, thread stacks and the JVM itself.
mem=$1; shift
case $mem in ''|*[!0-9]*) mem=128 ;; esac
heap=$((mem * 3 / 4))
[ "$heap" -ge 16 ] || heap=16
IFS= read -r cls < .pesto-main-class || { echo "run.sh: the compile stage recorded no main class" >&2; exit 1; }
case $cls in ''|-*|.*|*.|*..*|*[!A-Za-z0-9_.\$]*) echo "run.sh: bad main class name" >&2; exit 1 ;; esac
exec /usr/lib/jvm/java-17-openjdk-amd64/bin/java \
  "-Xmx${heap}m" -Xss1m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:CICompilerCount=1 \
  -XX:ReservedCodeCacheSize=16m "-XX:MaxMetaspaceSize=$((mem / 4 + 16))m" \
  -XX:-UsePerfData -Xshare:auto -cp classes "$cls" "$@"
