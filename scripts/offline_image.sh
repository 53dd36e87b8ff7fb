#!/usr/bin/env bash
# Build the slpt-label image where no image registry is reachable and containers cannot reach PyPI:
#   1. a base image made locally with debootstrap (Debian bookworm, its python3 3.11) and `docker import`;
#   2. a wheelhouse of requirements.lock built on the host (sdists built into wheels here), cached per lock;
#   3. `docker build` with the wheelhouse served on 127.0.0.1 and host networking (no bridge network needed).
# Usage: scripts/offline_image.sh [TAG]   (default slpt-label:local)
# Environment: SLPT_BASE_IMAGE (default local/bookworm-python:3.11), SLPT_CACHE (default ~/.cache/slpt),
# SLPT_WHEELHOUSE_PORT (default 47801; a fixed port keeps the wheel layer's cache key stable), DEBIAN_MIRROR.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:-slpt-label:local}
base=${SLPT_BASE_IMAGE:-local/bookworm-python:3.11}
cache=${SLPT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slpt}
port=${SLPT_WHEELHOUSE_PORT:-47801}
pip=${PIP:-$( [ -x .venv/bin/pip ] && echo .venv/bin/pip || echo "python3 -m pip" )}
wheels="$cache/wheelhouse-$(sha256sum requirements.lock | cut -c1-16)"

if ! docker image inspect "$base" >/dev/null 2>&1; then
  echo "making the base image $base with debootstrap"
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root/fs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$root/log" 2>&1 \
    || { tail -20 "$root/log"; exit 1; }
  tar -C "$root/fs" -c . | docker import --change 'CMD ["/bin/bash"]' - "$base" >/dev/null
  rm -rf "$root"
  trap - EXIT
fi

if [ ! -f "$wheels/.complete" ]; then
  echo "building the wheelhouse $wheels (once per requirements.lock)"
  rm -rf "$wheels.partial" && mkdir -p "$wheels.partial"
  $pip download --quiet --disable-pip-version-check --no-deps -r requirements.lock -d "$wheels.partial"
  for sdist in "$wheels.partial"/*.tar.gz; do
    [ -e "$sdist" ] || continue
    $pip wheel --quiet --disable-pip-version-check --no-deps -w "$wheels.partial" "$sdist"
    rm "$sdist"
  done
  touch "$wheels.partial/.complete"
  rm -rf "$wheels" && mv "$wheels.partial" "$wheels"
fi

python3 -m http.server --bind 127.0.0.1 --directory "$wheels" "$port" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/', timeout=1)" 2>/dev/null && break
  sleep 0.2
done

docker build --network host --build-arg BASE_IMAGE="$base" \
  --build-arg WHEELHOUSE_URL="http://127.0.0.1:$port/" -t "$tag" .
