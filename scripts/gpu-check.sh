#!/usr/bin/env bash
# GPU checks and timings of the CUDA backend (issue 6), for a GPU machine without Rust.
#
# Here (with Rust):   scripts/gpu-pack.sh            # builds, strips, packs devbin/ldm-gpu-bins.tar.gz
# On the GPU machine: OUT=/some/dir scripts/gpu-check.sh [quick|all]   (default all)
#
# Every step has its own timeout and the script keeps going after a failure; everything is
# logged to $OUT/gpu-check.log and a one-line-per-step summary to $OUT/summary.txt; bench and
# PyTorch results are also collected in $OUT/results.txt. Steps, in order:
#   1. cuda_kernels / cuda_runtime test binaries (--nocapture), the runtime library's cuda:: unit
#      tests and the ldm-cuda crate's unit tests (device feature)
#   2. the MONAI fixture pipeline via `generate --init-noise`: GPU f32/f16/bf16 vs CPU and vs MONAI
#   3. bundle scale: bf16/f16 UNet forward and decode vs the GPU's fp32, and 50 steps with device
#      memory read before/after (cuda_bundle, ignored tests)
#   4. `bench --device cuda` f32/f16/bf16 at latent [8,36,44,28] on a random bundle blob, and
#      bf16/f16 with the cuDNN workspace bound at 1 GiB instead of 2 (LDM_CUDNN_WORKSPACE_MIB)
#   5. benches/pytorch_reference.py --device cuda --latent 36 44 28, --amp off/fp16/bf16, and
#      --amp bf16 --best (SDPA, cudnn.benchmark, channels_last_3d, torch.compile) with a whole
#      volume; `generate --device cuda --count 8` wall time
#   6. Nsight Compute per-kernel GPU time of one bf16 UNet step and decode ($OUT/ncu-bf16.txt)
# "quick" stops after step 3.
set -u
mode="${1:-all}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo" || exit 1
OUT="${OUT:-/tmp/ldm-gpu-check}"
mkdir -p "$OUT"
LOG="$OUT/gpu-check.log"
SUMMARY="$OUT/summary.txt"
RESULTS="$OUT/results.txt"
: >"$LOG"
: >"$SUMMARY"
: >"$RESULTS"
WORK="${LDM_GPU_WORK:-/tmp/ldm-gpu-work}"
mkdir -p "$WORK"
# Outputs of an earlier run would be skipped by generate's resume logic: start clean.
rm -rf "$WORK"/fix-* "$WORK"/seed-* "$WORK"/bench-*.json "$WORK"/torch-*.txt
t_start=$(date +%s)

say() { echo "$*" | tee -a "$LOG"; }

# Whole-script deadline (seconds, LDM_GPU_BUDGET, default 440): a step's timeout never runs past
# it, and steps that would start with under 10 s left are skipped (listed in the summary).
budget="${LDM_GPU_BUDGET:-440}"

# run NAME SECONDS CMD...: one step with its own timeout; output to the log; rc to the summary.
run() {
    local name="$1" secs="$2"
    shift 2
    local left=$((budget - ($(date +%s) - t_start)))
    if [ "$left" -lt 10 ]; then
        say "=== $name: SKIPPED (script budget ${budget}s spent)"
        printf '%-40s %-14s\n' "$name" "SKIPPED" >>"$SUMMARY"
        return 125
    fi
    [ "$secs" -gt "$left" ] && secs="$left"
    say ""
    say "=== $name (timeout ${secs}s, t+$(($(date +%s) - t_start))s): $*"
    local t0
    t0=$(date +%s.%N)
    timeout --kill-after=5 "$secs" "$@" >>"$LOG" 2>&1
    local rc=$?
    local dt
    dt=$(python3 -c "import sys;print(f'{float(sys.argv[2])-float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)")
    local verdict=ok
    [ "$rc" -ne 0 ] && verdict="FAILED rc=$rc"
    [ "$rc" -eq 124 ] && verdict="TIMED OUT"
    say "=== $name: $verdict (${dt}s)"
    printf '%-40s %-14s %6ss\n' "$name" "$verdict" "$dt" >>"$SUMMARY"
    return "$rc"
}

# --- binaries: devbin/ldm-gpu-bins.tar.gz (packed by scripts/gpu-pack.sh) or devbin/ itself.
BIN="$WORK/bin"
mkdir -p "$BIN"
if [ -f devbin/ldm-gpu-bins.tar.gz ]; then
    tar -xzf devbin/ldm-gpu-bins.tar.gz -C "$BIN" || say "cannot unpack devbin/ldm-gpu-bins.tar.gz"
elif [ -d devbin ]; then
    cp devbin/* "$BIN"/ 2>/dev/null
fi
chmod +x "$BIN"/* 2>/dev/null
CLI="$BIN/brats-ldm"

# --- cuBLAS / cuDNN from PyTorch's pip wheels (nvidia/*/lib), unless already on the path.
nvlibs=$(python3 -c 'import nvidia,os
print(":".join(os.path.join(p,d,"lib") for p in nvidia.__path__ for d in sorted(os.listdir(p)) if os.path.isdir(os.path.join(p,d,"lib"))))' 2>/dev/null)
export LD_LIBRARY_PATH="${nvlibs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>&1
    python3 -c 'import torch;print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())' 2>&1
    echo "binaries: $(ls "$BIN" | tr '\n' ' ')"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
} | tee -a "$LOG" "$RESULTS"

bin_of() { ls "$BIN"/"$1"-* 2>/dev/null | grep -v '\.d$' | head -n1; }
KERNELS=$(bin_of cuda_kernels)
RUNTIME=$(bin_of cuda_runtime)
BUNDLE=$(bin_of cuda_bundle)
LIBTESTS=$(bin_of ldm_runtime)
CUDATESTS=$(bin_of ldm_cuda)

# --- 1. correctness: kernels, runtime end to end on a tiny model, unit tests touching the GPU.
[ -n "$KERNELS" ] && run cuda_kernels 90 "$KERNELS" --nocapture --test-threads=1
[ -n "$RUNTIME" ] && run cuda_runtime 120 "$RUNTIME" --nocapture --test-threads=1
[ -n "$LIBTESTS" ] && run lib_cuda_unit_tests 60 "$LIBTESTS" cuda:: --test-threads=4
[ -n "$CUDATESTS" ] && run ldm_cuda_unit_tests 60 "$CUDATESTS" --test-threads=4

# --- 2. the MONAI fixture pipeline (50 DDIM steps from the fixture's initial noise).
F=tests/fixtures/monai
FIX="$WORK/fixture.blob"
if run fixture_convert 60 "$CLI" convert --autoencoder "$F/autoencoder/autoencoder.safetensors" \
    --unet "$F/unet/unet.safetensors" --config tests/fixtures/configs/fixture_networks.json --out "$FIX"; then
    run fixture_cpu 60 "$CLI" generate --model "$FIX" --out "$WORK/fix-cpu" --init-noise "$F/pipeline/noise.npy" \
        --format npy --quiet
    for p in f32 f16 bf16; do
        run "fixture_cuda_$p" 60 "$CLI" generate --model "$FIX" --out "$WORK/fix-cuda-$p" \
            --init-noise "$F/pipeline/noise.npy" --format npy --device cuda --precision "$p" --quiet
    done
    # Seeded generation: initial noise drawn on the GPU by Philox vs the CPU's stream.
    run fixture_seeded_cpu 60 "$CLI" generate --model "$FIX" --out "$WORK/seed-cpu" --seed 7 --count 2 --format npy --quiet
    run fixture_seeded_cuda 60 "$CLI" generate --model "$FIX" --out "$WORK/seed-cuda" --seed 7 --count 2 --format npy \
        --device cuda --quiet
    run fixture_compare 60 python3 - "$WORK" "$F/pipeline/bundle_image.npy" "$RESULTS" <<'EOF'
import glob, os, sys
import numpy as np
work, ref_path, results = sys.argv[1:4]
def rel(a, b):
    a = a.astype(np.float64).ravel(); b = b.astype(np.float64).ravel()
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))
ref = np.load(ref_path)
cpu = np.load(os.path.join(work, "fix-cpu", "init-noise.npy"))
lines = [f"fixture pipeline (50 DDIM steps, --init-noise): CPU vs MONAI rel L2 {rel(cpu, ref):.3e}"]
bad = False
for p, tol in (("f32", 1e-4), ("f16", 2e-2), ("bf16", 2e-2)):
    path = os.path.join(work, f"fix-cuda-{p}", "init-noise.npy")
    if not os.path.exists(path):
        lines.append(f"  cuda {p}: no output"); bad = True; continue
    g = np.load(path)
    e_cpu, e_ref = rel(g, cpu), rel(g, ref)
    ok = e_cpu < tol and np.isfinite(g).all()
    bad |= not ok
    lines.append(f"  cuda {p}: vs CPU {e_cpu:.3e}, vs MONAI {e_ref:.3e} (tolerance {tol:g}) {'ok' if ok else 'FAIL'}")
for c in sorted(glob.glob(os.path.join(work, "seed-cpu", "*.npy"))):
    g = os.path.join(work, "seed-cuda", os.path.basename(c))
    if not os.path.exists(g):
        lines.append(f"  seeded {os.path.basename(c)}: no cuda output"); bad = True; continue
    e = rel(np.load(g), np.load(c)); bad |= not e < 1e-4
    lines.append(f"  seeded {os.path.basename(c)}: cuda f32 vs CPU {e:.3e}")
print("\n".join(lines))
open(results, "a").write("\n".join(lines) + "\n")
sys.exit(1 if bad else 0)
EOF
fi

# --- 3. bundle scale: memory before/after 50 steps, and the random blob for the benches.
if [ -n "$BUNDLE" ]; then
    run bundle_50_steps_memory 120 "$BUNDLE" --ignored --nocapture --exact fifty_bundle_steps_leave_device_memory_unchanged
    grep -E "^(F32|Bf16|F16)[: ]" "$LOG" >>"$RESULTS"
fi
[ "$mode" = quick ] && { say "quick mode: stopping before the timings"; }

if [ "$mode" != quick ]; then
    BLOB="$WORK/bundle-random.blob"
    [ -n "$BUNDLE" ] && LDM_BUNDLE_BLOB="$BLOB" run bundle_random_blob 60 "$BUNDLE" --ignored --nocapture --exact write_random_bundle_blob
    # --- 4. our timings.
    # cuDNN's per-convolution workspace bound (LDM_CUDNN_WORKSPACE_MIB, default 2048): at 1024
    # cuDNN cannot transpose the full-resolution decoder tensors to NHWC for tensor-core kernels.
    for ws in 2048 1024; do
        for p in bf16 f16 f32; do
            [ "$p" = f32 ] && [ "$ws" != 2048 ] && continue
            if [ -f "$BLOB" ]; then
                LDM_CUDNN_WORKSPACE_MIB=$ws run "bench_cuda_${p}_ws$ws" 75 sh -c "\"$CLI\" bench --device cuda --precision $p \
                    --model \"$BLOB\" --latent-shape 8,36,44,28 --steps 20 --warmup 3 --json >\"$WORK/bench-$p-ws$ws.json\"" \
                    && { echo "bench cuda $p (workspace bound $ws MiB): $(cat "$WORK/bench-$p-ws$ws.json")" >>"$RESULTS"; }
            fi
        done
    done
    # --- 5. PyTorch on the same card, same call.
    for amp in off bf16 fp16; do
        run "pytorch_amp_$amp" 90 sh -c "python3 benches/pytorch_reference.py --device cuda --latent 36 44 28 \
            --reps 5 --amp $amp >\"$WORK/torch-$amp.txt\" 2>&1; rc=\$?; cat \"$WORK/torch-$amp.txt\"; exit \$rc" \
            && { echo "pytorch amp $amp:"; cat "$WORK/torch-$amp.txt"; } >>"$RESULTS"
    done
    # The best PyTorch a careful user writes (SDPA, cudnn.benchmark, channels_last_3d,
    # torch.compile), bf16, with a whole volume (50 DDIM steps + decode); compile mode "default"
    # ("max-autotune" compiles for minutes).
    run pytorch_best_bf16 240 sh -c "python3 benches/pytorch_reference.py --device cuda --latent 36 44 28 \
        --reps 5 --amp bf16 --best --compile-mode default --volume 50 --json >\"$WORK/torch-best-bf16.txt\" 2>&1; rc=\$?; \
        cat \"$WORK/torch-best-bf16.txt\"; exit \$rc" \
        && { echo "pytorch best bf16:"; cat "$WORK/torch-best-bf16.txt"; } >>"$RESULTS"
    # Volumes per second of a batch job: generate 8 volumes (50 DDIM steps, bf16) to .nii.gz.
    if [ -f "$BLOB" ]; then
        run generate_cuda_bf16_count8 150 sh -c "rm -rf \"$WORK/gen8\"; s=\$(date +%s.%N); \"$CLI\" generate --device cuda \
            --precision bf16 --model \"$BLOB\" --out \"$WORK/gen8\" --count 8 --steps 50 --sampler ddim \
            >\"$WORK/gen8.txt\" 2>&1; rc=\$?; e=\$(date +%s.%N); awk -v s=\$s -v e=\$e -v rc=\$rc 'BEGIN { printf \"generate --count 8: %.2f s wall, rc %d\\n\", e - s, rc }'; exit \$rc" \
            && grep "generate --count 8" "$LOG" | tail -n1 >>"$RESULTS"
    fi
    # PyTorch fp32 without TF32 (cuDNN and matmul), the same arithmetic as our f32 path.
    run pytorch_amp_off_no_tf32 90 sh -c "python3 -c \"import runpy, sys, torch
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
sys.argv = ['pytorch_reference.py', '--device', 'cuda', '--latent', '36', '44', '28', '--reps', '5', '--amp', 'off']
runpy.run_path('benches/pytorch_reference.py', run_name='__main__')\" >\"$WORK/torch-off-notf32.txt\" 2>&1; rc=\$?; \
        cat \"$WORK/torch-off-notf32.txt\"; exit \$rc" \
        && { echo "pytorch amp off, TF32 disabled:"; cat "$WORK/torch-off-notf32.txt"; } >>"$RESULTS"
    # --- 6. where bf16 GPU time goes: per-kernel totals from Nsight Compute of one UNet step and
    # one decode (kernel replay makes this slow, so it runs last).
    if [ -f "$BLOB" ] && command -v ncu >/dev/null; then
        run ncu_bf16_step_decode 90 sh -c "ncu --clock-control none --metrics gpu__time_duration.sum \
            --print-summary per-kernel \"$CLI\" bench --device cuda --precision bf16 --model \"$BLOB\" \
            --latent-shape 8,36,44,28 --steps 1 --warmup 0 >\"$OUT/ncu-bf16.txt\" 2>&1"
    fi
fi

say ""
say "=== summary (total $(($(date +%s) - t_start))s)"
tee -a "$LOG" <"$SUMMARY"
echo "--- results" | tee -a "$LOG"
tee -a "$LOG" <"$RESULTS"
