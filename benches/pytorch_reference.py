"""Side-by-side PyTorch reference for the runtime's criterion benches.

A small self-contained PyTorch re-statement of the same operations as MONAI Generative 0.2.3's
decoder (post_quant_conv + Decoder) and DiffusionModelUNet, at the bundle's widths, with random
weights: it times one UNet step and one decode in eager fp32 on the CPU, like the Rust example
`cargo run --release -p ldm-runtime --example bundle`.

Usage: .venv-bench/bin/python benches/pytorch_reference.py [--threads 2] [--latent 12 12 8] [--reps 3]
       [--device cuda] [--amp fp16|bf16] [--best] [--volume 50] [--json]
(`python3 -m venv .venv-bench && .venv-bench/bin/pip install torch numpy` first.)

Modes: eager (default: the bundle's code as shipped, NCDHW, matmul-softmax attention) and `--best`,
the fastest PyTorch a careful user writes: `F.scaled_dot_product_attention` (flash/memory-efficient
kernels), `cudnn.benchmark`, channels_last_3d weights and activations, and `torch.compile`. The
pieces can also be chosen one by one (--sdpa, --cudnn-benchmark, --channels-last, --compile).
`--volume N` also times a whole volume: N DDIM steps (eta 0, the bundle's schedule) and a decode.
Every non-eager run first checks its UNet and decoder outputs against eager fp32 (relative L2).
GPU baseline at the bundle size: --device cuda --latent 36 44 28 --amp bf16 [--best] --volume 50.
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


GROUPS = 32
# F.scaled_dot_product_attention instead of the explicit softmax(q k^T) v (set by --sdpa/--best).
USE_SDPA = False


def gn(c):
    return nn.GroupNorm(GROUPS, c, eps=1e-6, affine=True)


def conv(cin, cout, k=3, stride=1):
    return nn.Conv3d(cin, cout, k, stride=stride, padding=k // 2)


class DecRes(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.n1, self.c1, self.n2, self.c2 = gn(cin), conv(cin, cout), gn(cout), conv(cout, cout)
        self.sc = conv(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.c1(F.silu(self.n1(x)))
        h = self.c2(F.silu(self.n2(h)))
        return (self.sc(x) if self.sc is not None else x) + h


class Decoder(nn.Module):
    def __init__(self, ch=(64, 128, 256), latent=8, nrb=2):
        super().__init__()
        rev = list(reversed(ch))
        self.pq = conv(latent, latent, 1)
        layers = [conv(latent, rev[0])]
        cin = rev[0]
        for i, c in enumerate(rev):
            for _ in range(nrb):
                layers.append(DecRes(cin, c))
                cin = c
            if i != len(rev) - 1:
                layers.append(nn.Upsample(scale_factor=2.0, mode="nearest"))
                layers.append(conv(cin, cin))
        layers += [gn(cin), conv(cin, 1)]
        self.body = nn.Sequential(*layers)

    def forward(self, z):
        return self.body(self.pq(z))


class Res(nn.Module):
    def __init__(self, cin, cout, temb):
        super().__init__()
        self.n1, self.c1, self.n2, self.c2 = gn(cin), conv(cin, cout), gn(cout), conv(cout, cout)
        self.t = nn.Linear(temb, cout)
        self.sc = conv(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, e):
        h = self.c1(F.silu(self.n1(x))) + self.t(F.silu(e))[:, :, None, None, None]
        return self.sc(x) + self.c2(F.silu(self.n2(h)))


class Attn(nn.Module):
    def __init__(self, c, dh):
        super().__init__()
        self.n, self.q, self.k, self.v = gn(c), nn.Linear(c, c), nn.Linear(c, c), nn.Linear(c, c)
        self.heads, self.dh = c // dh, dh

    def forward(self, x):
        b, c, d, h, w = x.shape
        t = self.n(x).reshape(b, c, -1).transpose(1, 2)
        split = lambda y: y.reshape(b, -1, self.heads, self.dh).permute(0, 2, 1, 3)
        q, k, v = split(self.q(t)), split(self.k(t)), split(self.v(t))
        if USE_SDPA:
            o = F.scaled_dot_product_attention(q, k, v)  # default scale 1/sqrt(dh)
        else:
            p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.dh), dim=-1)
            o = p @ v
        o = o.permute(0, 2, 1, 3).reshape(b, -1, c)
        return x + o.transpose(1, 2).reshape(b, c, d, h, w)


class Unet(nn.Module):
    def __init__(self, ch=(256, 256, 512), attn=(False, True, True), dh=(0, 64, 64), nrb=2, cin=8):
        super().__init__()
        self.c0 = ch[0]
        temb = 4 * ch[0]
        self.te = nn.Sequential(nn.Linear(ch[0], temb), nn.SiLU(), nn.Linear(temb, temb))
        self.cin = conv(cin, ch[0])
        self.down, skip_ch, c = nn.ModuleList(), [ch[0]], ch[0]
        for i, co in enumerate(ch):
            for _ in range(nrb):
                self.down.append(Res(c, co, temb))
                c = co
                if attn[i]:
                    self.down.append(Attn(c, dh[i]))
                skip_ch.append(c)
            if i != len(ch) - 1:
                self.down.append(conv(c, c, 3, 2))
                skip_ch.append(c)
        self.mid = nn.ModuleList([Res(c, c, temb), Attn(c, dh[-1]), Res(c, c, temb)])
        self.up = nn.ModuleList()
        for i, co in enumerate(reversed(ch)):
            lvl = len(ch) - 1 - i
            for _ in range(nrb + 1):
                self.up.append(Res(c + skip_ch.pop(), co, temb))
                c = co
                if attn[lvl]:
                    self.up.append(Attn(c, dh[lvl]))
            if i != len(ch) - 1:
                self.up.append(nn.Upsample(scale_factor=2.0, mode="nearest"))
                self.up.append(conv(c, c))
        self.out = nn.Sequential(gn(c), nn.SiLU(), conv(c, cin))

    def forward(self, x, t):
        half = self.c0 // 2
        f = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        a = t[:, None].float() * f[None]
        e = self.te(torch.cat([torch.cos(a), torch.sin(a)], -1))
        h = self.cin(x)
        skips = [h]
        for m in self.down:
            if isinstance(m, Res):
                h = m(h, e)
                skips.append(h)
            elif isinstance(m, Attn):
                h = m(h)
                skips[-1] = h
            else:
                h = m(h)
                skips.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, e)), e)
        for m in self.up:
            if isinstance(m, Res):
                h = m(torch.cat([h, skips.pop()], 1), e)
            else:
                h = m(h)
        return self.out(h)


def best_of(fn, reps, sync=lambda: None):
    fn()  # warm-up (cuDNN autotuning, lazy allocations)
    sync()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def timed_peak(fn, reps, device):
    """Best time of `fn` and, on CUDA, the peak bytes allocated while it ran."""
    if device != "cuda":
        return best_of(fn, reps), None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    t = best_of(fn, reps, torch.cuda.synchronize)
    return t, torch.cuda.max_memory_allocated() - base


def ddim_tables(steps, t_total=1000, b0=0.0015, b1=0.0195):
    """The bundle's scaled_linear_beta schedule and DDIM timesteps (generative 0.2.3)."""
    betas = torch.linspace(b0 ** 0.5, b1 ** 0.5, t_total, dtype=torch.float32) ** 2
    ac = torch.cumprod(1.0 - betas, 0)
    ts = (torch.arange(steps) * (t_total // steps)).flip(0)
    return ac, ts, t_total // steps


def sample_volume(unet, dec, x, steps):
    """N DDIM steps (eta 0) from x, then a decode: what one generated volume costs."""
    ac, ts, stride = ddim_tables(steps)
    for t in ts.tolist():
        a_t = float(ac[t])
        a_prev = float(ac[t - stride]) if t - stride >= 0 else 1.0
        eps = unet(x, torch.tensor([t], device=x.device)).float()
        x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5
        x = a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps
    return dec(x)


def rel_l2(a, b):
    a, b = a.float().flatten(), b.float().flatten()
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--latent", type=int, nargs=3, default=[12, 12, 8])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="the tiny fixture configuration (latent 8 8 4)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--amp", default="off", choices=["off", "fp16", "bf16"],
                    help="torch.autocast mixed precision (the bundle's GPU baseline is AMP)")
    ap.add_argument("--best", action="store_true", help="--sdpa --cudnn-benchmark --channels-last --compile")
    ap.add_argument("--sdpa", action="store_true", help="F.scaled_dot_product_attention")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    ap.add_argument("--channels-last", action="store_true", help="channels_last_3d weights and inputs")
    ap.add_argument("--compile", action="store_true", help="torch.compile both networks")
    ap.add_argument("--compile-mode", default="max-autotune-no-cudagraphs",
                    help="torch.compile mode (default max-autotune-no-cudagraphs; 'default' is faster to compile)")
    ap.add_argument("--volume", type=int, default=0, metavar="STEPS",
                    help="also time a whole volume: STEPS DDIM steps + decode")
    ap.add_argument("--json", action="store_true", help="also print one JSON line with every figure")
    args = ap.parse_args()
    global GROUPS, USE_SDPA
    if args.best:
        args.sdpa = args.cudnn_benchmark = args.channels_last = args.compile = True
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.tiny:
        GROUPS = 8
        args.latent = [8, 8, 4]
        unet = Unet(ch=(16, 32, 32), dh=(0, 16, 16)).eval()
        dec = Decoder(ch=(16, 16, 32)).eval()
    else:
        unet, dec = Unet().eval(), Decoder().eval()
    dev = torch.device(args.device)
    unet, dec = unet.to(dev), dec.to(dev)
    x = torch.randn(1, 8, *args.latent).to(dev)
    t500 = torch.tensor([500], device=dev)
    amp = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}[args.amp]
    autocast = lambda: torch.autocast(args.device, dtype=amp or torch.float32, enabled=amp is not None)
    tuned = args.sdpa or args.cudnn_benchmark or args.channels_last or args.compile
    check = {}
    if tuned or amp is not None:
        with torch.no_grad():  # eager fp32 references for the output check
            ref_u, ref_d = unet(x, t500).float(), dec(x).float()
    if args.device == "cuda" and args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    USE_SDPA = args.sdpa
    if args.channels_last:
        unet = unet.to(memory_format=torch.channels_last_3d)
        dec = dec.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    if args.compile:
        unet = torch.compile(unet, mode=args.compile_mode, dynamic=False)
        dec = torch.compile(dec, mode=args.compile_mode, dynamic=False)
    with torch.no_grad(), autocast():
        if tuned or amp is not None:
            t0 = time.perf_counter()
            check = {"unet_rel_l2": rel_l2(unet(x, t500), ref_u), "decode_rel_l2": rel_l2(dec(x), ref_d)}
            check["first_call_s"] = time.perf_counter() - t0  # includes compilation
        tu, mu = timed_peak(lambda: unet(x, t500), args.reps, args.device)
        td, md = timed_peak(lambda: dec(x), args.reps, args.device)
        tv, mv = (timed_peak(lambda: sample_volume(unet, dec, x, args.volume), 1, args.device)
                  if args.volume else (None, None))
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{args.threads} threads"
    mode = [m for m, on in [("sdpa", args.sdpa), ("cudnn.benchmark", args.cudnn_benchmark),
                            ("channels_last_3d", args.channels_last),
                            (f"torch.compile({args.compile_mode})", args.compile)] if on] or ["eager"]
    print(f"pytorch {torch.__version__}, {where}, amp {args.amp}, latent {args.latent}, {'tiny' if args.tiny else 'bundle widths'}, {' + '.join(mode)}")
    if check:
        print(f"check vs eager fp32: unet rel L2 {check['unet_rel_l2']:.2e}, decode rel L2 {check['decode_rel_l2']:.2e}; first call {check['first_call_s']:.1f} s")
    if mu is not None:
        print(f"peak activations: unet step {mu / 2**30:.3f} GiB, decode {md / 2**30:.3f} GiB")
    if args.tiny or args.latent != [12, 12, 8]:
        print(f"unet step: best {tu * 1e3:.2f} ms")
        print(f"decode: best {td * 1e3:.2f} ms")
    else:
        print(f"unet step: best {tu:.3f} s, {72.8 / tu:.1f} GFLOP/s (72.8 GFLOP)")
        print(f"decode: best {td:.3f} s, {238.7 / td:.1f} GFLOP/s (238.7 GFLOP)")
    if tv is not None:
        peak = f", peak activations {mv / 2**30:.3f} GiB" if mv is not None else ""
        print(f"volume ({args.volume} DDIM steps + decode): {tv:.3f} s{peak}")
    if args.json:
        import json
        print(json.dumps({"torch": torch.__version__, "device": where, "amp": args.amp, "latent": args.latent,
                          "mode": mode, "unet_step_s": tu, "decode_s": td, "volume_s": tv, "volume_steps": args.volume,
                          "peak_unet_bytes": mu, "peak_decode_bytes": md, "peak_volume_bytes": mv, **check}))


if __name__ == "__main__":
    main()
