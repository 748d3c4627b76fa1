#!/usr/bin/python3 -IS
"""Compile stage for Java: any public class name, not only Main.

Installed by install.sh as /opt/pesto/runtimes/java/compile.py and run by
the engine inside the compile sandbox as
    compile.py FILE MEMORY_MB
in the work dir. The source is only read and scanned here, never put on a
shell command line: javac gets it as an argv element.

1. Scan FILE (comments, strings, char literals and text blocks blanked) for
   its top-level types. The class to run is the public one; without one,
   the first top-level type that declares `static void main(`; else the
   first top-level type.
2. javac insists that a public class Foo lives in Foo.java: copy the
   source there when its name differs.
3. javac -d classes, then write the class name (with its package, if the
   file declares one) to .pesto-main-class for run.sh.
"""

import os
import re
import shutil
import sys

JAVAC = "/usr/lib/jvm/java-17-openjdk-amd64/bin/javac"
# A class-data-sharing archive of javac's own classes, made by install.sh:
# javac starts in about half the time with it. Without it (or if it does not
# match the JDK) the JVM silently loads classes the ordinary way.
JAVAC_CDS = "/opt/pesto/runtimes/java/javac.jsa"
IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*\Z")
TYPE_DECL = re.compile(
    r"\b((?:(?:public|protected|private|abstract|static|final|strictfp|sealed|non-sealed)\s+)*)"
    r"(?:class|interface|enum|record|@\s*interface)\s+([A-Za-z_$][A-Za-z0-9_$]*)")
PACKAGE = re.compile(r"^\s*package\s+([A-Za-z_$][A-Za-z0-9_$]*(?:\s*\.\s*[A-Za-z_$][A-Za-z0-9_$]*)*)\s*;")
MAIN = re.compile(r"\bstatic\b[^;{}()]*\bvoid\s+main\s*\(")


def blank(src: str) -> str:
    """Replace comments and literals with spaces, keeping offsets."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
        elif src.startswith('"""', i):
            j = src.find('"""', i + 3)
            while j > 0 and src[j - 1] == "\\":
                j = src.find('"""', j + 1)
            j = n if j < 0 else j + 3
        elif c in "\"'":
            j = i + 1
            while j < n and src[j] != c and src[j] != "\n":
                j += 2 if src[j] == "\\" else 1
            j = min(j + 1, n)
        else:
            out.append(c)
            i += 1
            continue
        out.append(re.sub(r"[^\n]", " ", src[i:j]))
        i = j
    return "".join(out)


def top_level_types(code: str) -> list[tuple[str, bool, str]]:
    """(name, is_public, body) for each type declared at brace depth 0."""
    found = []
    depth = 0
    pos = 0
    for m in re.finditer(r"[{}]", code):
        if m.start() < pos:
            continue
        if m.group() == "}":
            depth = max(depth - 1, 0)
            continue
        if depth == 0:
            header = code[pos:m.start()]
            decls = list(TYPE_DECL.finditer(header))
            if decls:
                d = decls[-1]
                # the body runs to the matching close brace
                level, k = 0, m.start()
                while k < len(code):
                    if code[k] == "{":
                        level += 1
                    elif code[k] == "}":
                        level -= 1
                        if level == 0:
                            break
                    k += 1
                found.append((d.group(2), "public" in d.group(1).split(), code[m.start():k + 1]))
                pos = k + 1
                continue
        depth += 1
    return found


def main() -> int:
    src_name = sys.argv[1]
    memory_mb = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() else 512
    with open(src_name, encoding="utf-8", errors="replace") as f:
        code = blank(f.read())
    types = top_level_types(code)
    public = [t for t in types if t[1]]
    with_main = [t for t in types if MAIN.search(t[2])]
    chosen = (public or with_main or types or [(None, False, "")])[0][0]
    if chosen is None:
        print(f"{src_name}: no class, interface, enum or record found", file=sys.stderr)
        return 1
    if not IDENT.match(chosen):
        print(f"{src_name}: cannot use {chosen!r} as a class name", file=sys.stderr)
        return 1
    source = src_name
    if public and os.path.basename(src_name) != chosen + ".java":
        source = os.path.join(os.path.dirname(src_name), chosen + ".java")
        if os.path.lexists(source):
            print(f"{source} already exists; cannot copy {src_name} there", file=sys.stderr)
            return 1
        shutil.copyfile(src_name, source)
    package = PACKAGE.match(code)
    qualified = chosen
    if package:
        qualified = re.sub(r"\s+", "", package.group(1)) + "." + chosen
    with open(".pesto-main-class", "w") as f:
        f.write(qualified + "\n")
    heap = max(memory_mb * 3 // 4, 32)
    sys.stdout.flush()
    cds = [f"-J-XX:SharedArchiveFile={JAVAC_CDS}", "-J-Xlog:disable"] \
        if os.path.exists(JAVAC_CDS) else []
    os.execv(JAVAC, [
        JAVAC, f"-J-Xmx{heap}m", "-J-XX:+UseSerialGC", "-J-XX:-UsePerfData",
        "-J-XX:TieredStopAtLevel=1", "-J-Xshare:auto", *cds,
        "-encoding", "UTF-8", "-nowarn", "-Xlint:none",
        "-sourcepath", ".", "-d", "classes", source,
    ])


if __name__ == "__main__":
    sys.exit(main())
