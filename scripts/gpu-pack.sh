#!/usr/bin/env bash
# Builds the CUDA test binaries and the CLI with `--features cuda`, strips them and packs them
# into devbin/ldm-gpu-bins.tar.gz (git-ignored) for scripts/gpu-check.sh on a GPU machine that has
# no Rust. The device tool carries at most 64 MiB with the tracked tree (~39 MB), so the archive
# must stay small: the script prints its size. Usage: scripts/gpu-pack.sh [-j N]  (default -j 2)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
jobs="${2:-2}"
[ "${1:-}" = "-j" ] || jobs=2
# build.rs finds nvcc in .venv-nvcc by itself (exporting NVCC would change the build fingerprint).
scripts/install-nvcc.sh >/dev/null

# The test binaries' paths, from cargo's JSON messages (newest build of each target).
tests_json=$(cargo test --release -p ldm-runtime -p ldm-cuda --features ldm-runtime/cuda --no-run -j "$jobs" --message-format=json 2>/dev/null)
cargo build --release --features cuda -j "$jobs" >&2
pick() {
    # $1: target name, $2: kind (test or lib); prints the executable path.
    printf '%s\n' "$tests_json" | python3 -c '
import json, sys
name, kind = sys.argv[1], sys.argv[2]
exe = None
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    t = m.get("target") or {}
    if m.get("reason") == "compiler-artifact" and t.get("name") == name and kind in t.get("kind", []) and m.get("executable"):
        exe = m["executable"]
print(exe or "")' "$1" "$2"
}
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
for spec in cuda_kernels:test cuda_runtime:test cuda_bundle:test ldm_runtime:rlib ldm_cuda:lib; do
    exe=$(pick "${spec%%:*}" "${spec##*:}")
    [ -n "$exe" ] || { echo "no executable for $spec" >&2; exit 1; }
    cp "$exe" "$stage/"
done
cp target/release/brats-ldm "$stage/"
strip "$stage"/*
mkdir -p devbin
tar -C "$stage" -czf devbin/ldm-gpu-bins.tar.gz .
ls -l "$stage" >&2
ls -l devbin/ldm-gpu-bins.tar.gz >&2
