"""Side by side, one volume: the brats_ldm package vs the brats-ldm CLI vs MONAI + PyTorch, on
the same weights (a MONAI AutoencoderKL + DiffusionModelUNet with the default model's
architecture and random weights, saved with torch.save and converted to a blob by
`brats-ldm convert`), each run in a fresh process: wall time, time in generate, import time,
peak RSS; plus installed sizes, bit-identity package vs CLI, and the MONAI vs runtime difference
on a deterministic DDIM run from the same initial noise.

Usage (from the repository root; GNU time at /usr/bin/time measures peak RSS):
    python python/bench/compare.py --cli target/release/brats-ldm \
        --torch-python /path/to/venv-with-torch-and-monai/bin/python [--reps 3] [--threads 2] [--no-monai]
`python` has brats_ldm installed (pip install ./python); the torch interpreter has torch,
monai and numpy.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# The default model's architecture (weights/default/brats-ldm-default.blob: `brats-ldm inspect`).
ARCH = dict(
    latent_channels=4, ae_channels=[16, 32, 32], unet_channels=[32, 64], attention=[False, True], heads=[0, 32],
    groups=8, latent_shape=[4, 10, 12, 8], scale_factor=0.7725737, beta_start=0.0015, beta_end=0.0195,
)

CONFIG = {
    "autoencoder_def": {
        "spatial_dims": 3, "in_channels": 1, "out_channels": 1, "latent_channels": ARCH["latent_channels"],
        "num_channels": ARCH["ae_channels"], "num_res_blocks": 1, "norm_num_groups": ARCH["groups"], "norm_eps": 1e-6,
        "attention_levels": [False, False, False], "with_encoder_nonlocal_attn": False, "with_decoder_nonlocal_attn": False,
    },
    "network_def": {
        "spatial_dims": 3, "in_channels": ARCH["latent_channels"], "out_channels": ARCH["latent_channels"],
        "num_channels": ARCH["unet_channels"], "attention_levels": ARCH["attention"], "num_head_channels": ARCH["heads"],
        "num_res_blocks": 1, "norm_num_groups": ARCH["groups"], "norm_eps": 1e-6,
    },
    "noise_scheduler": {
        "num_train_timesteps": 1000, "beta_start": ARCH["beta_start"], "beta_end": ARCH["beta_end"],
        "schedule": "scaled_linear_beta", "clip_sample": False, "sampler": "ddpm", "num_inference_steps": 1000,
    },
    "latent_shape": ARCH["latent_shape"],
    "scale_factor": ARCH["scale_factor"],
}

TORCH_COMMON = """
import json, sys, time
t0 = time.perf_counter()
import torch, monai
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
from monai.networks.schedulers import DDPMScheduler, DDIMScheduler
import numpy as np
t_import = time.perf_counter() - t0
A = json.loads(sys.argv[1]); work = sys.argv[2]
torch.set_num_threads(int(sys.argv[3]))
def nets():
    ae = AutoencoderKL(spatial_dims=3, in_channels=1, out_channels=1, channels=A["ae_channels"],
        latent_channels=A["latent_channels"], num_res_blocks=(1, 1, 1), norm_num_groups=A["groups"], norm_eps=1e-6,
        attention_levels=(False, False, False), with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)
    unet = DiffusionModelUNet(spatial_dims=3, in_channels=A["latent_channels"], out_channels=A["latent_channels"],
        channels=A["unet_channels"], attention_levels=A["attention"], num_head_channels=A["heads"], num_res_blocks=1,
        norm_num_groups=A["groups"], norm_eps=1e-6)
    return ae.eval(), unet.eval()
def sample(ae, unet, scheduler, x):
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = unet(x, timesteps=torch.full((1,), int(t), dtype=torch.long))
            x, _ = scheduler.step(eps, t, x)
        return ae.decode_stage_2_outputs(x / A["scale_factor"])
def schedule(kind):
    cls = DDPMScheduler if kind == "ddpm" else DDIMScheduler
    return cls(num_train_timesteps=1000, schedule="scaled_linear_beta", beta_start=A["beta_start"], beta_end=A["beta_end"], clip_sample=False)
"""

TORCH_SAVE = TORCH_COMMON + """
torch.manual_seed(0)
ae, unet = nets()
torch.save(ae.state_dict(), work + "/autoencoder.pt")
torch.save(unet.state_dict(), work + "/unet.pt")
"""

TORCH_RUN = TORCH_COMMON + """
t1 = time.perf_counter()
ae, unet = nets()
ae.load_state_dict(torch.load(work + "/autoencoder.pt")); unet.load_state_dict(torch.load(work + "/unet.pt"))
t2 = time.perf_counter()
torch.manual_seed(0)
x = torch.randn(1, *A["latent_shape"])
volume = sample(ae, unet, schedule("ddpm"), x)
t3 = time.perf_counter()
print(json.dumps(dict(import_s=t_import, load_s=t2 - t1, generate_s=t3 - t2, shape=list(volume.shape))))
"""

TORCH_DDIM = TORCH_COMMON + """
ae, unet = nets()
ae.load_state_dict(torch.load(work + "/autoencoder.pt")); unet.load_state_dict(torch.load(work + "/unet.pt"))
noise = np.load(work + "/noise.npy")
s = schedule("ddim"); s.set_timesteps(50)
# generative 0.2.3's DDIM timesteps (980, 960, ..., 0), which the runtime follows; MONAI >= 1.4
# spaces them from 999 instead (999, 979, ...), a different trajectory.
s.timesteps = torch.from_numpy((np.arange(0, 50) * (1000 // 50))[::-1].copy())
volume = sample(ae, unet, s, torch.from_numpy(noise)[None])
np.save(work + "/monai_ddim50.npy", volume[0].numpy())
"""

PKG_RUN = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np, brats_ldm
t_import = time.perf_counter() - t0
t1 = time.perf_counter()
model = brats_ldm.Model(sys.argv[1], threads=int(sys.argv[3]))
t2 = time.perf_counter()
volume = model.generate(seed=0)
t3 = time.perf_counter()
np.save(sys.argv[2], volume)
print(json.dumps(dict(import_s=t_import, load_s=t2 - t1, generate_s=t3 - t2, shape=list(volume.shape), plan=model.plan)))
"""


def measured(cmd):
    """Runs cmd under GNU time; returns (wall seconds, peak RSS bytes, stdout). (A child forked
    from this process directly would report this process's RSS as its peak when larger: Linux
    keeps maxrss across exec.)"""
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "maxrss_kib=%M", *map(str, cmd)], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed: {proc.stderr}")
    line = [l for l in proc.stderr.splitlines() if l.startswith("maxrss_kib=")][-1]
    return wall, int(line.split("=")[1]) * 1024, proc.stdout


def dir_bytes(paths):
    return sum(f.stat().st_size for p in paths if p.exists() for f in p.rglob("*") if f.is_file())


def site_packages(python):
    out = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    ap.add_argument("--torch-python", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-monai", action="store_true", help="only the package vs the CLI (MONAI needs minutes per run)")
    args = ap.parse_args()
    import brats_ldm

    work = Path(tempfile.mkdtemp(prefix="brats-ldm-bench-"))
    arch = json.dumps(ARCH)
    threads = str(args.threads)
    subprocess.run([args.torch_python, "-c", TORCH_SAVE, arch, str(work), threads], check=True)
    (work / "config.json").write_text(json.dumps(CONFIG))
    blob = work / "bench.blob"
    subprocess.run([args.cli, "convert", "--autoencoder", work / "autoencoder.pt", "--unet", work / "unet.pt", "--config",
                    work / "config.json", "--decoder-only", "--attention-output-projection", "--out", blob], check=True, capture_output=True)

    # Correctness of "same weights": deterministic DDIM 50 from one initial noise, MONAI vs runtime.
    model = brats_ldm.Model(blob, threads=args.threads)
    noise = np.random.default_rng(0).standard_normal(ARCH["latent_shape"]).astype(np.float32)
    np.save(work / "noise.npy", noise)
    subprocess.run([args.torch_python, "-c", TORCH_DDIM, arch, str(work), threads], check=True)
    ours = model.generate(init_noise=noise, sampler="ddim", steps=50)
    theirs = np.load(work / "monai_ddim50.npy")
    rel_l2 = float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))
    del model

    rows = {"cli": [], "package": [], "monai": []}
    identical = True
    for rep in range(args.reps):
        out_dir = work / f"cli-{rep}"

        def run_cli():
            wall, rss, _ = measured([args.cli, "generate", "--model", blob, "--out", out_dir, "--seed", "0",
                                     "--format", "npy", "--quiet", "--threads", threads])
            rows["cli"].append(dict(wall_s=wall, peak_rss=rss))

        def run_package():
            wall, rss, out = measured([sys.executable, "-c", PKG_RUN, blob, work / f"pkg-{rep}.npy", threads])
            rows["package"].append(dict(wall_s=wall, peak_rss=rss, **json.loads(out)))

        # alternate which one runs first, so a drift in machine load does not favour one
        for run in (run_cli, run_package) if rep % 2 == 0 else (run_package, run_cli):
            run()
        identical &= np.load(out_dir / "seed-000000.npy").tobytes() == np.load(work / f"pkg-{rep}.npy").tobytes()
        if not args.no_monai:
            wall, rss, out = measured([args.torch_python, "-c", TORCH_RUN, arch, work, threads])
            rows["monai"].append(dict(wall_s=wall, peak_rss=rss, **json.loads(out)))

    if args.no_monai:
        del rows["monai"]

    def med(name, key):
        if name not in rows:
            return None
        return statistics.median(r[key] for r in rows[name])

    pkg_site = Path(brats_ldm.__file__).parent
    torch_site = site_packages(args.torch_python)
    sizes = {
        "package": dir_bytes([pkg_site, pkg_site.parent / "numpy", pkg_site.parent / "numpy.libs"]),
        "monai": dir_bytes([torch_site / n for n in ("torch", "monai", "numpy", "numpy.libs", "nvidia", "triton", "sympy", "networkx", "functorch", "torchgen")]),
    }
    summary = {
        "reps": args.reps,
        "threads": args.threads,
        "package_vs_cli_identical": identical,
        "monai_vs_runtime_ddim50_rel_l2": rel_l2,
        "wall_s": {k: med(k, "wall_s") for k in rows},
        "peak_rss_mib": {k: med(k, "peak_rss") / 2**20 for k in rows},
        "generate_s": {k: med(k, "generate_s") for k in rows if k != "cli"},
        "import_s": {k: med(k, "import_s") for k in rows if k != "cli"},
        "installed_mib": {k: v / 2**20 for k, v in sizes.items()},
        "package_overhead_vs_cli_pct": 100 * (med("package", "wall_s") / med("cli", "wall_s") - 1),
        "runs": rows,
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
