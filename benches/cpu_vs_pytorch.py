"""Our CPU runtime and PyTorch CPU side by side, in one run, at the bundle's widths.

For each microkernel of ours (`LDM_CPU_KERNEL`, every one this CPU runs) and the matching PyTorch
instruction set (AVX-512: PyTorch's defaults; AVX2: ATEN_CPU_CAPABILITY=avx2,
DNNL_MAX_CPU_ISA=AVX2, MKL_ENABLE_INSTRUCTIONS=AVX2, checked by a probe that reads back what
PyTorch, oneDNN and MKL report), it times one UNet step and one decode (latent [8,12,12,8] by
default, random weights) in alternating rounds: ours `cargo run --release -p ldm-runtime
--example bundle`, PyTorch `benches/pytorch_reference.py` (eager fp32). Each process reports its
best of `--reps`; over the rounds the script prints min and median per side and the ratios
PyTorch time / ours, with the CPU model, its SIMD flags, the load average and the date.

Usage (repository root): python benches/cpu_vs_pytorch.py [--python /path/to/python-with-torch]
       [--rounds 5] [--reps 2] [--threads 2] [--latent 12 12 8] [--kernels avx512,avx2,portable]
       [--baseline-bundle PATH]   (another build's bundle example, timed in the same rounds)
       [--busy N]   (N competing busy processes, one per core, running through every round: how
                     each side degrades when a batch node's cores are shared)
"""
import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# PyTorch settings matching each of our kernels; `None`: no PyTorch counterpart (ours only).
TORCH_ENV = {
    "avx512": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "neon": {},
    "portable": None,
}

PROBE = r"""
import torch, torch.nn.functional as F
torch.set_num_threads(1)
print("capability", torch.backends.cpu.get_cpu_capability(), flush=True)
x = torch.randn(1, 8, 6, 6, 6)
w = torch.randn(8, 8, 3, 3, 3)
F.conv3d(x, w, padding=1)
torch.randn(64, 64) @ torch.randn(64, 64)
try:  # MKL's own CPU dispatch (internal symbols of the MKL that PyTorch links statically)
    import ctypes, os
    lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
    print("mkl_branch", lib.mkl_serv_cpu_detect(), lib.mkl_serv_cbwr_get_auto_branch(), flush=True)
except (OSError, AttributeError):
    print("mkl_branch unknown", flush=True)
"""


def cpu_info():
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("unknown", "", platform.machine()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith(("flags", "Features")) and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = sorted(f for f in flags if re.match(r"^(avx|fma|sse4|asimd|sve|bf16|amx)", f))
    return model, simd


def loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def build_bundle():
    """Builds the bundle example (CARGO_TARGET_DIR respected) and returns its path."""
    out = subprocess.run(
        ["cargo", "build", "--release", "-p", "ldm-runtime", "--example", "bundle", "--message-format=json-render-diagnostics"],
        cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True,
    ).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "bundle" and msg.get("executable"):
            return msg["executable"]
    sys.exit("cargo did not report the bundle example's executable")


def parse_times(text, who):
    unet = re.search(r"unet step: best ([0-9.]+) (m?s)", text)
    dec = re.search(r"decode: best ([0-9.]+) (m?s)", text)
    if not unet or not dec:
        sys.exit(f"could not read the times of {who}:\n{text}")
    sec = lambda m: float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)
    return sec(unet), sec(dec)


def run(cmd, env, who):
    p = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        sys.exit(f"{who} failed ({p.returncode}):\n{p.stdout}")
    return p.stdout


def probe_torch(python, env):
    """What PyTorch, oneDNN and MKL use under `env` (their own verbose reports)."""
    text = run([python, "-c", PROBE], {**env, "ONEDNN_VERBOSE": "1", "DNNL_VERBOSE": "1", "MKL_VERBOSE": "1"}, "PyTorch probe")
    cap = re.search(r"^capability (\S+)", text, re.M)
    isa = re.search(r"isa:([^,\n]+)", text)
    branch = re.search(r"^mkl_branch (.*)$", text, re.M)
    return {
        "aten": cap.group(1) if cap else "?",
        "onednn_isa": isa.group(1).strip() if isa else "oneDNN not called by conv3d",
        "conv3d_on_mkl_sgemm": "MKL_VERBOSE SGEMM" in text,
        "mkl_cpu_detect_and_cbwr_branch": branch.group(1) if branch else "?",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--python", default=sys.executable, help="a Python with torch (CPU)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=2, help="timed repetitions per process (best taken)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--latent", type=int, nargs=3, default=[12, 12, 8])
    ap.add_argument("--kernels", default="", help="comma-separated (default: every kernel this CPU runs)")
    ap.add_argument("--baseline-bundle", default="", help="bundle example of another build, timed in the same rounds")
    ap.add_argument("--busy", type=int, default=0, help="competing busy processes during the rounds")
    args = ap.parse_args()

    model, simd = cpu_info()
    flags = set(simd)
    runnable = {"avx512": "avx512f" in flags, "avx2": "avx2" in flags and "fma" in flags,
                "neon": platform.machine() in ("aarch64", "arm64"), "portable": True}
    kernels = [k for k in args.kernels.split(",") if k] or [k for k in ("avx512", "avx2", "neon", "portable") if runnable[k]]
    for k in kernels:
        if k not in TORCH_ENV:
            sys.exit(f"unknown kernel {k}")
    bundle = build_bundle()
    lat = [str(v) for v in args.latent]
    ours_cmd = [bundle, *lat, "--threads", str(args.threads), "--reps", str(args.reps)]
    torch_cmd = [args.python, os.path.join(ROOT, "benches", "pytorch_reference.py"), "--threads", str(args.threads), "--reps", str(args.reps), "--latent", *lat]

    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout.strip()
    torch_version = run([args.python, "-c", "import torch; print(torch.__version__)"], {}, "PyTorch").strip()
    print(f"date {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, build {commit or '?'}, PyTorch {torch_version}")
    print(f"CPU {model}, {os.cpu_count()} logical CPUs; SIMD flags: {' '.join(simd)}")
    print(f"latent [8,{','.join(lat)}], {args.threads} threads, {args.rounds} alternating rounds, best of {args.reps} per process")
    for k in kernels:
        if TORCH_ENV[k] is not None:
            print(f"PyTorch for {k}: env {TORCH_ENV[k] or 'default'} -> {probe_torch(args.python, TORCH_ENV[k])}")

    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    if busy:
        print(f"{len(busy)} competing busy process(es) running through the rounds")
    try:
        measure(args, kernels, ours_cmd, torch_cmd)
    finally:
        for p in busy:
            p.kill()
            p.wait()


def measure(args, kernels, ours_cmd, torch_cmd):
    times = {(side, k): [] for k in kernels for side in ("ours", "torch")}
    base_cmd = [args.baseline_bundle, *ours_cmd[1:]] if args.baseline_bundle else None
    base = []
    loads = []
    for r in range(args.rounds):
        loads.append(loadavg())
        if base_cmd:
            base.append(parse_times(run(base_cmd, {}, "baseline"), "baseline"))
            print(f"round {r + 1} baseline build unet {base[-1][0]:.3f} s decode {base[-1][1]:.3f} s", flush=True)
        for k in kernels:
            u, d = parse_times(run(ours_cmd, {"LDM_CPU_KERNEL": k}, f"ours ({k})"), f"ours ({k})")
            times[("ours", k)].append((u, d))
            line = f"round {r + 1} {k:<8} ours unet {u:.3f} s decode {d:.3f} s"
            if TORCH_ENV[k] is not None:
                tu, td = parse_times(run(torch_cmd, TORCH_ENV[k], f"PyTorch ({k})"), f"PyTorch ({k})")
                times[("torch", k)].append((tu, td))
                line += f" | PyTorch unet {tu:.3f} s decode {td:.3f} s"
            print(line, flush=True)
    loads.append(loadavg())

    print(f"\nload average (1 min) over the run: {min(loads):.1f}-{max(loads):.1f}")
    print("| kernel | what | ours min / median | PyTorch min / median | ratio PyTorch/ours (min, median) |")
    print("| --- | --- | --- | --- | --- |")
    for k in kernels:
        for i, what in enumerate(("UNet step", "decode")):
            ours = [t[i] for t in times[("ours", k)]]
            o = f"{min(ours):.3f} / {statistics.median(ours):.3f} s"
            if times[("torch", k)]:
                th = [t[i] for t in times[("torch", k)]]
                p = f"{min(th):.3f} / {statistics.median(th):.3f} s"
                ratio = f"{min(th) / min(ours):.2f}, {statistics.median(th) / statistics.median(ours):.2f}"
            else:
                p, ratio = "-", "-"
            print(f"| {k} | {what} | {o} | {p} | {ratio} |")
    for i, what in enumerate(("UNet step", "decode")):
        if base:
            b = [t[i] for t in base]
            print(f"baseline build {what}: min {min(b):.3f} s, median {statistics.median(b):.3f} s")


if __name__ == "__main__":
    main()
