#!/usr/bin/env bash
# Pins the Dockerfile's base images to the digests their tags point at now.
#
#   deploy/pin-digests.sh            resolve and rewrite RUST_DIGEST / RUNTIME_DIGEST
#   deploy/pin-digests.sh --check    exit 1 if a digest is empty or no longer the tag's
#
# Needs `docker buildx` (or any docker with the buildx plugin) and access to the registries
# (Docker Hub for rust, gcr.io for distroless); no daemon is needed. The digest written is
# the one of the tag's multi-platform index, so the pin holds on every architecture.
# Re-run it when bumping RUST_IMAGE / RUNTIME_IMAGE or to take the base images' security
# updates (distroless's :nonroot tag moves with every Debian update), and commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."

dockerfile=Dockerfile
check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

if ! docker buildx version >/dev/null 2>&1; then
  echo "$0: docker buildx is not available (install the buildx plugin)" >&2
  exit 1
fi

# The default of `ARG NAME=value` in the Dockerfile.
arg_default() {
  sed -n "s/^ARG $1=\(.*\)$/\1/p" "$dockerfile" | head -1
}

resolve() {
  local image=$1 digest
  digest=$(docker buildx imagetools inspect "$image" --format '{{.Manifest.Digest}}')
  if [[ ! $digest =~ ^sha256:[0-9a-f]{64}$ ]]; then
    echo "$0: could not resolve $image (got '$digest')" >&2
    exit 1
  fi
  printf '%s\n' "$digest"
}

status=0
for pair in RUST_IMAGE:RUST_DIGEST RUNTIME_IMAGE:RUNTIME_DIGEST; do
  image_arg=${pair%%:*}
  digest_arg=${pair#*:}
  image=$(arg_default "$image_arg")
  current=$(arg_default "$digest_arg")
  if [ -z "$image" ]; then
    echo "$0: no 'ARG $image_arg=' in $dockerfile" >&2
    exit 1
  fi
  digest=$(resolve "$image")
  if $check; then
    if [ "$current" != "$digest" ]; then
      echo "$digest_arg: ${current:-<empty>}, but $image is $digest now"
      status=1
    else
      echo "$digest_arg: $image@$digest (current)"
    fi
  else
    sed -i "s|^ARG $digest_arg=.*$|ARG $digest_arg=$digest|" "$dockerfile"
    echo "$digest_arg=$digest   ($image)"
  fi
done
exit "$status"
