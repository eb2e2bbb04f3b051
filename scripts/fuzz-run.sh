#!/usr/bin/env bash
# Runs fuzz targets (docs/fuzzing.md): builds them with cargo-fuzz (stable Rust, no sanitizer),
# seeds empty corpora (scripts/fuzz-seeds.sh), fuzzes each target for SECONDS, then replays the
# target's regression inputs (fuzz/regressions/<target>/). Prints one summary line per target:
# executions, coverage edges, corpus size, the heap's high-water mark, findings.
# Usage: scripts/fuzz-run.sh SECONDS [TARGET...]        (default: every target)
# Environment: FUZZ_JOBS (targets run at once, default 1), FUZZ_LOGS (default fuzz/logs),
# FUZZ_RUNS (also stop a target after this many executions, whichever comes first).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:?usage: scripts/fuzz-run.sh SECONDS [TARGET...]}"
shift
logs="${FUZZ_LOGS:-fuzz/logs}"
jobs="${FUZZ_JOBS:-1}"
# FUZZ_BIN: already-built target binaries (e.g. a copy kept stable during long runs)
[ -n "${FUZZ_BIN:-}" ] || (cd fuzz && cargo fuzz build --sanitizer none)
bin="${FUZZ_BIN:-fuzz/target/x86_64-unknown-linux-gnu/release}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi
[ -d fuzz/corpus ] || scripts/fuzz-seeds.sh fuzz/corpus >/dev/null
mkdir -p "$logs"
# Targets that read files write their inputs under $TMPDIR/ldm-fuzz-<pid>: one folder for this
# run, removed at the end.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/ldm-fuzz-run.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
export TMPDIR="$scratch"

# One target: fuzz, then replay its regressions; returns non-zero on any finding.
one() {
  local t=$1 log="$logs/$1.log"
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  local rc=0 t0=$SECONDS TIMEFORMAT='cpu seconds %U user %S system'
  # `time` appends the fuzzer's CPU time to its log: on a shared machine the wall-clock seconds
  # libFuzzer reports can be far more than the CPU it had.
  { time "$bin/$t" "fuzz/corpus/$t" -max_total_time="$secs" -runs="${FUZZ_RUNS:--1}" -max_len=1048576 -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1 || rc=$?; } 2>>"$log"
  local reg=()
  if [ -d "fuzz/regressions/$t" ]; then
    mapfile -t reg < <(find "fuzz/regressions/$t" -type f | sort)
  fi
  if [ $rc -eq 0 ] && [ ${#reg[@]} -gt 0 ]; then
    "$bin/$t" -timeout=10 -rss_limit_mb=2048 "${reg[@]}" >>"$log" 2>&1 || rc=$?
  fi
  local runs edges corp peak cpu took=$((SECONDS - t0))
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
  edges=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || true)
  corp=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || true)
  peak=$(grep -o 'heap peak [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || true)
  cpu=$(awk '/^cpu seconds/ { printf "%.0f", $3 + $5 }' "$log")
  printf '%-17s %s s (%s s of CPU), %s executions, %s edges, corpus %s, heap peak %s bytes, %s regression inputs, %s\n' \
    "$t" "$took" "${cpu:-?}" "${runs:-?}" "${edges:-?}" "${corp:-?}" "${peak:-under 1048576}" "${#reg[@]}" \
    "$([ $rc -eq 0 ] && echo 'no finding' || echo "FINDING (exit $rc, see $log)")"
  return $rc
}

status=0
running=0
for t in "${targets[@]}"; do
  one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || status=1
    running=$((running - 1))
  fi
done
while [ "$running" -gt 0 ]; do
  wait -n || status=1
  running=$((running - 1))
done
exit $status
