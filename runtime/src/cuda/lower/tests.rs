//! Host checks of the lowering: the steps interpreted with naive loops against the CPU runtime,
//! the arena layout, and the bundle's plan size.

use super::*;
use crate::model::{build_decoder, build_unet, Params};
use crate::options::Options;
use crate::runtime::Runtime;
use crate::weights::WeightStore;
use ldm_weights::ModelConfig;

fn small_config() -> ModelConfig {
    crate::test_models::small_model_config([4, 4, 6, 4])
}

/// Executes lowered steps with naive loops on a host arena (the GPU's semantics, step by step).
fn interpret(l: &Lowered, params: &Params, dynamic: &[Vec<f32>], arena: &mut [f32]) {
    let f = |r: Region| (r.offset / 4, r.bytes / 4);
    for step in &l.steps {
        match step {
            Step::GroupNormStats {
                x,
                channels,
                spatial,
                groups,
                eps,
                gamma,
                beta,
                out,
            } => {
                let (xo, _) = f(*x);
                let (oo, _) = f(*out);
                let cg = channels / groups;
                for g in 0..*groups {
                    let v = &arena[xo + g * cg * spatial..xo + (g + 1) * cg * spatial];
                    let mean = v.iter().map(|&a| a as f64).sum::<f64>() / v.len() as f64;
                    let var = v.iter().map(|&a| (a as f64 - mean).powi(2)).sum::<f64>()
                        / v.len() as f64;
                    let rstd = 1.0 / (var + *eps as f64).sqrt();
                    for c in g * cg..(g + 1) * cg {
                        let sc = params.vecs[*gamma][c] as f64 * rstd;
                        arena[oo + c] = sc as f32;
                        arena[oo + channels + c] =
                            (params.vecs[*beta][c] as f64 - mean * sc) as f32;
                    }
                }
            }
            Step::Normalize {
                x,
                scale_shift,
                channels,
                spatial,
                silu,
                out,
            } => {
                let (xo, so, oo) = (f(*x).0, f(*scale_shift).0, f(*out).0);
                for c in 0..*channels {
                    let (sc, sh) = (arena[so + c], arena[so + channels + c]);
                    for i in 0..*spatial {
                        let mut v = arena[xo + c * spatial + i] * sc + sh;
                        if *silu {
                            v /= 1.0 + (-v).exp();
                        }
                        arena[oo + c * spatial + i] = v;
                    }
                }
            }
            Step::Upsample { x, rows, dims, out } => {
                let (xo, oo) = (f(*x).0, f(*out).0);
                let [d, h, w] = *dims;
                for r in 0..*rows {
                    for z in 0..2 * d {
                        for y in 0..2 * h {
                            for xx in 0..2 * w {
                                arena[oo + ((r * 2 * d + z) * 2 * h + y) * 2 * w + xx] =
                                    arena[xo + ((r * d + z / 2) * h + y / 2) * w + xx / 2];
                            }
                        }
                    }
                }
            }
            Step::Conv {
                spec,
                weight,
                x,
                out,
                accumulate,
            } => {
                let s = l.specs[*spec];
                let w = &params.matrices[*weight].data;
                let (xo, oo) = (f(*x).0, f(*out).0);
                let [d, h, wd] = s.in_dims;
                let o = s.out_dims().unwrap();
                let (k, st, pd) = (s.kernel[0], s.stride[0] as isize, s.padding[0] as isize);
                let input = arena[xo..xo + s.in_channels * d * h * wd].to_vec();
                for co in 0..s.out_channels {
                    for z in 0..o[0] {
                        for y in 0..o[1] {
                            for xx in 0..o[2] {
                                let mut acc = 0f64;
                                for ci in 0..s.in_channels {
                                    for kz in 0..k {
                                        for ky in 0..k {
                                            for kx in 0..k {
                                                let iz = z as isize * st + kz as isize - pd;
                                                let iy = y as isize * st + ky as isize - pd;
                                                let ix = xx as isize * st + kx as isize - pd;
                                                if iz < 0
                                                    || iy < 0
                                                    || ix < 0
                                                    || iz >= d as isize
                                                    || iy >= h as isize
                                                    || ix >= wd as isize
                                                {
                                                    continue;
                                                }
                                                let xi = input[((ci * d + iz as usize) * h
                                                    + iy as usize)
                                                    * wd
                                                    + ix as usize];
                                                acc += xi as f64
                                                    * w[(((co * s.in_channels + ci) * k + kz)
                                                        * k
                                                        + ky)
                                                        * k
                                                        + kx]
                                                        as f64;
                                            }
                                        }
                                    }
                                }
                                let i = oo + ((co * o[0] + z) * o[1] + y) * o[2] + xx;
                                arena[i] = if *accumulate {
                                    arena[i] + acc as f32
                                } else {
                                    acc as f32
                                };
                            }
                        }
                    }
                }
            }
            Step::AddBias {
                x,
                bias,
                channels,
                spatial,
            } => {
                let b = match bias {
                    BiasRef::Param(i) => &params.vecs[*i],
                    BiasRef::Dynamic(i) => &dynamic[*i],
                };
                let xo = f(*x).0;
                for c in 0..*channels {
                    for i in 0..*spatial {
                        arena[xo + c * spatial + i] += b[c];
                    }
                }
            }
            Step::Add { out, a, b } => {
                let (oo, n) = f(*out);
                let (ao, bo) = (f(*a).0, f(*b).0);
                for i in 0..n {
                    arena[oo + i] = arena[ao + i] + arena[bo + i];
                }
            }
            Step::Copy { from, to } => {
                let (fo, n) = f(*from);
                let v = arena[fo..fo + n].to_vec();
                arena[f(*to).0..f(*to).0 + n].copy_from_slice(&v);
            }
            Step::Attention {
                qkv,
                residual,
                channels,
                tokens,
                head_dim,
                out,
            } => {
                let (c, n, dh) = (*channels, *tokens, *head_dim);
                let q = arena[f(*qkv).0..f(*qkv).0 + 3 * c * n].to_vec();
                let res = residual.map(|r| arena[f(r).0..f(r).0 + c * n].to_vec());
                let oo = f(*out).0;
                for h in 0..c / dh {
                    for i in 0..n {
                        let s: Vec<f64> = (0..n)
                            .map(|j| {
                                (0..dh)
                                    .map(|d| {
                                        q[(h * dh + d) * n + i] as f64
                                            * q[(c + h * dh + d) * n + j] as f64
                                    })
                                    .sum::<f64>()
                                    / (dh as f64).sqrt()
                            })
                            .collect();
                        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let p: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                        let z: f64 = p.iter().sum();
                        for d in 0..dh {
                            let ch = h * dh + d;
                            let o: f64 = (0..n)
                                .map(|j| p[j] * q[(2 * c + ch) * n + j] as f64)
                                .sum::<f64>()
                                / z;
                            let r = res.as_ref().map_or(0.0, |r| r[ch * n + i] as f64);
                            arena[oo + ch * n + i] = (o + r) as f32;
                        }
                    }
                }
            }
            Step::Concat { a, b, out } => {
                let (ao, an) = f(*a);
                let (bo, bn) = f(*b);
                let v: Vec<f32> = arena[ao..ao + an]
                    .iter()
                    .chain(&arena[bo..bo + bn])
                    .copied()
                    .collect();
                let oo = f(*out).0;
                arena[oo..oo + an + bn].copy_from_slice(&v);
            }
        }
    }
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
    (num / den).sqrt()
}

fn check_layout(l: &Lowered) {
    for r in [l.scratch, l.gn_partial] {
        assert_eq!(r.offset % ARENA_ALIGN, 0);
        assert!(r.offset >= l.activation_bytes && r.end() <= l.total_bytes);
    }
}

#[test]
fn lowered_decoder_equals_the_cpu_decoder() {
    let cfg = small_config();
    let store = WeightStore::random(&cfg, 7).unwrap();
    let latent = cfg.latent_shape.map(|v| v as usize);
    let mut params = Params::default();
    let dec = build_decoder(
        cfg.decoder.as_ref().unwrap(),
        &store,
        latent,
        &mut params,
    )
    .unwrap();
    let l = lower(&dec.graph).unwrap();
    check_layout(&l);
    assert!(l.steps.iter().any(|s| matches!(s, Step::Upsample { .. })));
    assert!(
        l.steps.iter().any(|s| matches!(s, Step::Copy { .. })),
        "staged shortcut conv"
    );
    let n: usize = latent.iter().product();
    let mut z = vec![0f32; n];
    crate::philox_normal(3, 0, &mut z);
    let mut arena = vec![f32::NAN; l.total_bytes / 4];
    let inp = region(&dec.graph, dec.input.buf).unwrap();
    arena[inp.offset / 4..inp.offset / 4 + n].copy_from_slice(&z);
    interpret(&l, &params, &[], &mut arena);
    let outr = region(&dec.graph, dec.output.buf).unwrap();
    let got = &arena[outr.offset / 4..outr.offset / 4 + dec.output.len()];

    let mut rt = Runtime::from_store(
        &cfg,
        &store,
        Options {
            threads: Some(1),
            ..Options::default()
        },
    )
    .unwrap();
    let mut want = vec![0f32; dec.output.len()];
    rt.decode(&z, &mut want).unwrap();
    let err = rel_l2(got, &want);
    println!(
        "lowered decoder vs CPU: relative L2 {err:.2e} over {} steps",
        l.steps.len()
    );
    assert!(err < 1e-5, "lowered decoder vs CPU: relative L2 {err}");
}

#[test]
fn lowered_unet_equals_the_cpu_unet() {
    let cfg = small_config();
    let ucfg = cfg.unet.as_ref().unwrap();
    let store = WeightStore::random(&cfg, 8).unwrap();
    let latent = cfg.latent_shape.map(|v| v as usize);
    let mut params = Params::default();
    let u = build_unet(ucfg, &store, latent, &mut params).unwrap();
    let l = lower(&u.graph).unwrap();
    check_layout(&l);
    assert!(l.steps.iter().any(|s| matches!(s, Step::Attention { .. })));
    assert!(l.steps.iter().any(|s| matches!(
        s,
        Step::AddBias {
            bias: BiasRef::Dynamic(_),
            ..
        }
    )));
    let t = 421u32;
    // Time embedding and per-block projections, naive (the GPU does this with GEMMs).
    let v = &params.vecs;
    let half = u.c0 / 2;
    let mut e0 = vec![0f32; u.c0];
    for i in 0..half {
        let freq = ((-(10000f64.ln()) as f32 * i as f32 / half as f32) as f64).exp() as f32;
        let arg = (t as f32 * freq) as f64;
        e0[i] = arg.cos() as f32;
        e0[half + i] = arg.sin() as f32;
    }
    let lin = |w: &[f32], b: &[f32], x: &[f32]| -> Vec<f32> {
        b.iter()
            .enumerate()
            .map(|(o, &bo)| {
                let s: f64 = w[o * x.len()..(o + 1) * x.len()]
                    .iter()
                    .zip(x)
                    .map(|(&a, &c)| a as f64 * c as f64)
                    .sum();
                (s + bo as f64) as f32
            })
            .collect()
    };
    let silu =
        |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|x| x / (1.0 + (-x).exp())).collect() };
    let e1 = silu(lin(&v[u.time_w1], &v[u.time_b1], &e0));
    let e2 = silu(lin(&v[u.time_w2], &v[u.time_b2], &e1));
    let dynamic: Vec<Vec<f32>> = u
        .slots
        .iter()
        .map(|s| {
            lin(&v[s.proj_w], &v[s.proj_b], &e2)
                .iter()
                .zip(&v[s.conv_bias])
                .map(|(p, c)| p + c)
                .collect()
        })
        .collect();

    let n: usize = latent.iter().product();
    let mut x = vec![0f32; n];
    crate::philox_normal(4, 0, &mut x);
    let mut arena = vec![f32::NAN; l.total_bytes / 4];
    let inp = region(&u.graph, u.input.buf).unwrap();
    arena[inp.offset / 4..inp.offset / 4 + n].copy_from_slice(&x);
    interpret(&l, &params, &dynamic, &mut arena);
    let outr = region(&u.graph, u.output.buf).unwrap();
    let got = &arena[outr.offset / 4..outr.offset / 4 + n];

    let mut rt = Runtime::from_store(
        &cfg,
        &store,
        Options {
            threads: Some(1),
            ..Options::default()
        },
    )
    .unwrap();
    let mut want = vec![0f32; n];
    rt.unet_forward(&x, t, &mut want).unwrap();
    let err = rel_l2(got, &want);
    println!(
        "lowered UNet vs CPU: relative L2 {err:.2e} over {} steps",
        l.steps.len()
    );
    assert!(err < 1e-5, "lowered UNet vs CPU: relative L2 {err}");
}

/// Device memory of the lowered bundle plan (fp32). Slow (210 M random parameters):
/// `cargo test --release -p ldm-runtime --features cuda --lib bundle_plan_bytes -- --ignored --nocapture`
#[test]
#[ignore = "slow: generates 210 M random parameters"]
fn bundle_plan_bytes() {
    let mut cfg = ModelConfig::bundle();
    cfg.encoder = None;
    let store = WeightStore::random(&cfg, 1).unwrap();
    let latent = cfg.latent_shape.map(|v| v as usize);
    let mut params = Params::default();
    let u = build_unet(
        cfg.unet.as_ref().unwrap(),
        &store,
        latent,
        &mut params,
    )
    .unwrap();
    let d = build_decoder(
        cfg.decoder.as_ref().unwrap(),
        &store,
        latent,
        &mut params,
    )
    .unwrap();
    let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
    for (name, g) in [("unet", &u.graph), ("decoder", &d.graph)] {
        let l = lower(g).unwrap();
        println!(
            "{name}: {} steps, {} conv shapes; activations {:.2} GiB, conv scratch {:.2}, \
             GroupNorm partials {:.4}; total {:.2} GiB",
            l.steps.len(),
            l.specs.len(),
            gib(l.activation_bytes),
            gib(l.scratch.bytes),
            gib(l.gn_partial.bytes),
            gib(l.total_bytes)
        );
    }
    let wbytes = params.bytes();
    println!("weights (fp32, PyTorch layout): {:.2} GiB", gib(wbytes));
}
