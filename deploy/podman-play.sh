#!/usr/bin/env bash
# Runs deploy/pesto.yaml on this one machine with `podman kube play`: a PostgreSQL pod and
# PESTO_NODES Pesto pods (default: the manifest's replicas) on a podman network with DNS.
# Run as root (the Pesto sandbox needs a rootful container); images are built locally.
#
#   deploy/podman-play.sh            # build what is missing, start, print the nodes
#   deploy/podman-play.sh --down     # stop and remove the pods (the database volume stays)
#
# What podman does differently from Kubernetes, and what this script does about it:
# - Services are not created: the PostgreSQL pod is reached by its pod name
#   (pesto-db-pod-0) on the network `pesto` (DNS on: the netavark backend, or the CNI
#   dnsname plugin, Debian package golang-github-containernetworking-plugin-dnsname),
#   and the Pesto pods by their addresses, printed at the end (put a load balancer there);
#   containerPorts are dropped (podman 4.3 would publish each on the host, and the
#   replicas would collide).
# - podman 4.3 reads a secretKeyRef from a podman secret holding a JSON map of base64
#   values, and mis-reads the manifest's own Secret: the script makes the secret `pesto`
#   itself (random passwords, unless PESTO_DB_PASSWORD / PESTO_ADMIN_TOKEN are set) and
#   plays the manifest without its Secret document.
# - `podman kube play` has no --ulimit: CONTAINERS_CONF defaults to
#   deploy/podman/containers.conf (ulimits below the hard limits, runc).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
manifest=$here/pesto.yaml
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/podman/containers.conf}
base=${BASE_IMAGE:-docker.io/library/debian:bookworm-slim}
languages=${LANGUAGES:-python}
played=$(mktemp)
trap 'rm -f "$played"' EXIT

# The manifest without its Secret (see above); PESTO_NODES overrides the replicas.
# A second play finds the database volume from the first: podman 4.3 refuses to create
# it again, so its claim is left out and the Deployment mounts the existing volume.
volume=new
podman volume exists pesto-db-data && volume=existing
python3 - "$manifest" "${PESTO_NODES:-}" "$volume" > "$played" <<'EOF'
import re, sys
docs = re.split(r"^---\n", open(sys.argv[1]).read(), flags=re.M)
skip = r"^kind: (Secret|PersistentVolumeClaim)$" if sys.argv[3] == "existing" else r"^kind: Secret$"
out = [d for d in docs if not re.search(skip, d, flags=re.M)]
text = "---\n".join(out)
# podman 4.3 publishes every containerPort on the host: replicas would collide on 8080
# (and the database on a host's 5432). The pods talk over the network instead.
text = re.sub(r"^( +)ports:\n(\1  - containerPort: \d+\n)+", "", text, flags=re.M)
if sys.argv[2]:
    text = re.sub(r"^(  replicas: )3(\s)", r"\g<1>" + sys.argv[2] + r"\2", text, flags=re.M)
print(text)
EOF

if [ "${1:-}" = "--down" ]; then
    podman kube down "$played" || true
    exit 0
fi

if ! podman image exists localhost/pesto-postgres:15; then
    podman build --format docker --build-arg BASE_IMAGE="$base" \
        -t localhost/pesto-postgres:15 "$here/postgres"
fi
if ! podman image exists localhost/pesto:cluster; then
    ca=()
    [ -r /etc/ssl/certs/ca-certificates.crt ] && ca=(-v /etc/ssl/certs/ca-certificates.crt:/run/pesto-build/ca.crt:ro)
    podman build --format docker --build-arg BASE_IMAGE="$base" --build-arg LANGUAGES="$languages" \
        "${ca[@]}" -t localhost/pesto:cluster -f "$repo/Containerfile" "$repo"
fi

podman network exists pesto || podman network create pesto >/dev/null

if ! podman secret inspect pesto >/dev/null 2>&1; then
    db_password=${PESTO_DB_PASSWORD:-$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')}
    admin=${PESTO_ADMIN_TOKEN:-pesto_$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')}
    b64() { printf '%s' "$1" | base64 -w0; }
    printf '{"postgres-password":"%s","store-url":"%s","admin-token":"%s"}' \
        "$(b64 "$db_password")" \
        "$(b64 "postgresql://postgres:$db_password@pesto-db-pod-0:5432/pesto")" \
        "$(b64 "$admin")" | podman secret create pesto - >/dev/null
    echo "admin token (X-Pesto-Token): $admin"
fi

podman kube play --network pesto "$played"

# The nodes restart until PostgreSQL accepts connections; wait for them to be ready.
echo "waiting for the Pesto pods..."
for _ in $(seq 1 90); do
    pods=$(podman pod ps --format '{{.Name}}' | grep '^pesto-pod-' | sort || true)
    ready=0
    for pod in $pods; do
        ip=$(podman inspect -f '{{(index .NetworkSettings.Networks "pesto").IPAddress}}' "$pod-pesto" 2>/dev/null || true)
        [ -n "$ip" ] && python3 -c "import urllib.request,sys; urllib.request.urlopen('http://$ip:8080/healthz', timeout=2)" 2>/dev/null \
            && ready=$((ready + 1))
    done
    [ -n "$pods" ] && [ "$ready" = "$(echo "$pods" | wc -w)" ] && break
    sleep 2
done
for pod in $pods; do
    ip=$(podman inspect -f '{{(index .NetworkSettings.Networks "pesto").IPAddress}}' "$pod-pesto")
    echo "$pod: http://$ip:8080"
done
first=$(echo "$pods" | head -n1)
[ -n "$first" ] && podman exec "$first-pesto" pesto doctor | grep -E '^(store|  node)'
