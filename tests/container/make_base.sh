#!/usr/bin/env bash
# Makes the Debian 12 base image the container tests build on, without a
# container registry: debootstrap (minbase) from the host's own Debian mirror,
# then `podman import`. Cached: does nothing when the image already exists.
#
#   tests/container/make_base.sh                 # -> localhost/debian:bookworm-slim
#   PESTO_BASE_IMAGE=localhost/foo:bar tests/container/make_base.sh
#
# Also installs what the tests need on the host (podman, runc, debootstrap)
# when missing. Run as root. Takes ~1-2 min the first time.
set -euo pipefail

image=${PESTO_BASE_IMAGE:-localhost/debian:bookworm-slim}
here=$(cd "$(dirname "$0")" && pwd)

if [ "$(id -u)" != 0 ]; then
  echo "make_base.sh: run as root (debootstrap and rootful podman)" >&2
  exit 1
fi

need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  echo "make_base.sh: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
if podman image exists "$image"; then
  echo "make_base.sh: $image already present"
  exit 0
fi

# The mirror the host's apt uses (deb822 .sources or one-line .list files).
mirror=$(
  { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' || true
    grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' || true
  } | grep -v -- '-security' | grep -v '^\[' | head -n1 || true
)
mirror=${mirror:-http://deb.debian.org/debian}
security=${mirror%/debian}/debian-security
echo "make_base.sh: debootstrap bookworm from $mirror"

root=$(mktemp -d /var/tmp/pesto-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
  tail -n 20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"

# Look like the official debian:bookworm-slim: deb822 sources with updates and
# security, no docs/man/locales from later installs, empty apt caches.
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
CFG
find "$root/usr/share/doc" -mindepth 2 ! -name copyright -type f -delete 2>/dev/null || true
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
rm -rf "$root"/var/log/* "$root"/tmp/*

tar --numeric-owner -C "$root" -c . | podman import --quiet \
  --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  - "$image" >/dev/null
echo "make_base.sh: imported $image ($(podman image inspect --format '{{.Size}}' "$image") bytes)"
