#!/usr/bin/env bash
# NOT RUN BY ./install.sh. An alternative route, kept for when the engine
# can run it: Julia 1.5.3, Debian 11's own build, from the Debian archive,
# into /opt/pesto/runtimes/julia1.5 - the only Julia a Debian 12 machine can
# get from the registries it reaches (Debian dropped Julia after 11; no PyPI
# or npm package ships a Julia binary). It installs and runs here (bare:
# hello world, LinearAlgebra, BigFloat, Random all work), but not yet in the
# sandbox:
#  - Julia's JIT memory manager first tries to write /proc/self/mem, which
#    Landlock forbids, then falls back to a memfd that it ftruncate()s to
#    512 MiB (1.5; 128 MiB in 1.10): the engine's RLIMIT_FSIZE (the 64 MiB
#    disk limit) kills it with SIGXFSZ. It needs a per-language file-size
#    limit >= 512 MiB (the memfd is memory, charged to the cgroup when used).
#  - hello world peaks at ~150 MiB RSS (sys.so, OpenBLAS), over the default
#    128 MiB limit, and needs RLIMIT_DATA >= ~384 MiB without a cgroup.
# Usage once those allow it: make a languages/julia1.5 folder whose
# install.sh is this file and whose language.toml runs
# /opt/pesto/runtimes/julia1.5/usr/bin/julia with LD_LIBRARY_PATH set to
# $dest/usr/lib/x86_64-linux-gnu:$dest/usr/lib/x86_64-linux-gnu/julia.
#
# Ten Debian 11 packages are unpacked (not installed) under the runtime dir:
# Julia itself and the libraries whose sonames Debian 12 no longer ships
# (LLVM 9, libgit2 1.1, mbedTLS 2.16, libffi7, openlibm 3), plus MPFR 4.1,
# whose printf Julia 1.5's BigFloat printing relies on. Everything else comes
# from Debian 12 (apt). Julia finds them through LD_LIBRARY_PATH (set in
# language.toml). Each .deb is pinned by the SHA-256 in Debian 11's signed
# package index. Debian 11's files may leave deb.debian.org once it is
# archived; the script then fails with the URL that could not be fetched.
set -euo pipefail
version=1.5.3
mirror=${PESTO_DEBIAN_MIRROR:-http://deb.debian.org/debian}
dest=${PESTO_JULIA15_DEST:-/opt/pesto/runtimes/julia1.5}
debs="\
  pool/main/j/julia/julia_1.5.3+dfsg-3_amd64.deb 273cb954a3a3c8025dbbf9369d4f674c26565e9ca7f9ea92f0e4c32e25479ff1 \
  pool/main/j/julia/julia-common_1.5.3+dfsg-3_all.deb 915bb9a7c1d79043b4ab5f4b3e019a9920d6d553f111ef5059a73a6aef0853dd \
  pool/main/j/julia/libjulia1_1.5.3+dfsg-3_amd64.deb 29597ae673fad5528a4fb8d6f9710740a4be18474f59e9949a21057250f963b2 \
  pool/main/l/llvm-toolchain-9/libllvm9_9.0.1-16.1_amd64.deb 747697f517e6419ef0392b57cd64221421977b18ee63b2b114ce98c1d4234d3f \
  pool/main/libf/libffi/libffi7_3.3-6_amd64.deb 30ca89bfddae5fa6e0a2a044f22b6e50cd17c4bc6bc850c579819aeab7101f0f \
  pool/main/libg/libgit2/libgit2-1.1_1.1.0+dfsg.1-4+deb11u2_amd64.deb 632664b066480aecc38cf43e688a01c648d75969d33bd3a1434b1fc777c64651 \
  pool/main/m/mbedtls/libmbedcrypto3_2.16.9-0.1_amd64.deb 5370ae12b872d3e75ff80d680354a5c2d6a26b9c86effee6c105a1668103cf01 \
  pool/main/m/mbedtls/libmbedtls12_2.16.9-0.1_amd64.deb eb0729d4ba2010879e89335607565b1d68901bacbcd1be4cf01528a5643f18d0 \
  pool/main/m/mbedtls/libmbedx509-0_2.16.9-0.1_amd64.deb 4749453a2a6bf33d341c9bd449b903657223df19362d4486d66733417eef1141 \
  pool/main/o/openlibm/libopenlibm3_0.7.0+dfsg-2_amd64.deb dc5d2d353a434e775c67bc3ecf4f22db74ca0b8a932577bd1f290760874d386a \
  pool/main/m/mpfr4/libmpfr6_4.1.0-3_amd64.deb 5d26306d12a45a8a03dca473490d56a765b58d61b53146c1c7784903cf59c45d"
# What those packages need that Debian 12 still has under the same names.
sysdeps="libcurl3-gnutls libdsfmt-19937-1 libedit2 libgcc-s1 libgfortran5 libgmp10 libgssapi-krb5-2
  libhttp-parser2.9 libpcre2-8-0 libpcre3 libquadmath0 libssh2-1 libstdc++6 libtinfo6 libunwind8
  libutf8proc2 libz3-4 zlib1g curl ca-certificates"
lib=$dest/usr/lib/x86_64-linux-gnu
run_julia() {
  LD_LIBRARY_PATH="$lib:$lib/julia" "$dest/usr/bin/julia" --startup-file=no --history-file=no "$@"
}

if [ -x "$dest/usr/bin/julia" ] && [ "$(run_julia --version 2>/dev/null)" = "julia version $version" ]; then
  echo "julia $version already installed in $dest"; exit 0
fi
if [ "$(dpkg --print-architecture)" != amd64 ]; then
  echo "julia1.5: only amd64 is pinned here"; exit 1
fi
need=()
for pkg in $sysdeps; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
[ ${#need[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rm -rf "$dest.new"
mkdir -p "$dest.new"
set -- $debs
while [ $# -gt 0 ]; do
  path=$1 sum=$2; shift 2
  file=$tmp/$(basename "$path")
  if ! curl -fsSL --connect-timeout 15 --max-time 600 --retry 2 -o "$file" "$mirror/$path"; then
    echo "julia1.5: cannot download $mirror/$path (Debian 11 may have moved to archive.debian.org: set PESTO_DEBIAN_MIRROR)"
    exit 1
  fi
  if ! echo "$sum  $file" | sha256sum --check --status -; then
    echo "julia1.5: $path does not have the pinned SHA-256 $sum"; exit 1
  fi
  dpkg-deb -x "$file" "$dest.new"
done
rm -rf "$dest.new/usr/share/doc" "$dest.new/usr/share/man" "$dest.new/usr/share/lintian"
# Debian's links to the system libraries are relative (../libfoo.so.N):
# point the ones that do not resolve inside the runtime dir at Debian 12's.
for link in "$dest.new/usr/lib/x86_64-linux-gnu/julia"/*; do
  [ -L "$link" ] && [ ! -e "$link" ] || continue
  target=/usr/lib/x86_64-linux-gnu/$(basename "$(readlink "$link")")
  [ -e "$target" ] || target=$(ls /usr/lib/x86_64-linux-gnu/"$(basename "$link")".* 2>/dev/null | head -n1)
  if [ -n "$target" ] && [ -e "$target" ]; then ln -sfn "$target" "$link"; fi
done
# Names Julia 1.5 dlopen()s that only Debian 11's -dev packages provided.
ln -sfn /usr/lib/x86_64-linux-gnu/libdSFMT-19937.so.1 "$dest.new/usr/lib/x86_64-linux-gnu/julia/libdSFMT.so"
chmod -R a+rX,go-w "$dest.new"
rm -rf "$dest"
mv "$dest.new" "$dest"
out=$(run_julia -e 'using LinearAlgebra, Random; print(VERSION, " ", det([1.0 2; 3 4]), " ", big(1)/3 > 0.33)')
echo "julia $out installed in $dest"
