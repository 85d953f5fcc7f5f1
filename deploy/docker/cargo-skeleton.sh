#!/bin/sh
# cargo-skeleton.sh SRC DEST — the dependency-only copy of the package in SRC, for the
# Dockerfile's cached dependency layer (what cargo-chef does, with cargo alone).
#
# DEST gets SRC's Cargo.toml and Cargo.lock, and a stub at the path of every target cargo
# reports for the package (lib, bins, benches, tests, examples, the build script), so that
# the manifest loads and `cargo build --release --locked` in DEST compiles exactly SRC's
# dependencies. Every stub is the same two lines, valid as a library, a binary, a
# harness = false bench and a build script. DEST is therefore identical — and the Docker
# layer built from it reused — until Cargo.toml, Cargo.lock or the list of targets changes;
# stubs get mtime 0 so that the file contents alone decide.
#
# After building DEST, remove the package's own artefacts (`cargo clean --release -p NAME`)
# before building the real sources over it: their mtimes are older than the stub build's
# outputs, so cargo could otherwise keep the stubs.
set -eu

if [ "$#" -ne 2 ]; then
  echo "usage: $0 SRC DEST" >&2
  exit 2
fi
src=$(cd "$1" && pwd -P)
dest=$2

metadata=$(cargo metadata --manifest-path "$src/Cargo.toml" --no-deps --format-version 1 --offline)
# One package, one line of JSON; src_path values are absolute.
paths=$(printf '%s\n' "$metadata" | grep -o '"src_path":"[^"]*"' | sed 's/^"src_path":"//; s/"$//')
if [ -z "$paths" ]; then
  echo "$0: cargo metadata reported no targets in $src" >&2
  exit 1
fi
if [ "$(printf '%s\n' "$metadata" | grep -o '"manifest_path":' | wc -l)" -ne 1 ]; then
  echo "$0: $src is a workspace of several packages: not supported" >&2
  exit 1
fi

mkdir -p "$dest"
cp "$src/Cargo.toml" "$src/Cargo.lock" "$dest/"
printf '%s\n' "$paths" | while IFS= read -r path; do
  case "$path" in
    "$src"/*) relative=${path#"$src"/} ;;
    *) echo "$0: target $path lies outside $src: not supported" >&2; exit 1 ;;
  esac
  case "$relative" in
    *\\*|*..*) echo "$0: unexpected target path $relative" >&2; exit 1 ;;
  esac
  mkdir -p "$dest/$(dirname "$relative")"
  printf '#![allow(dead_code)]\nfn main() {}\n' > "$dest/$relative"
  touch -d @0 "$dest/$relative"
done
touch -d @0 "$dest/Cargo.toml" "$dest/Cargo.lock"
