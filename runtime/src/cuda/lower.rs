//! Lowers the CPU's static plan (`graph::Graph`, fp32, one sample) into GPU steps over byte
//! regions of one device arena, so the CUDA backend executes exactly the plan the CPU executes.
//! The activation regions keep the CPU plan's offsets (liveness-based reuse included); scratch
//! for normalised conv inputs, upsampled conv inputs, in-place (staged) 1x1 conv outputs and
//! GroupNorm partial statistics follows them. Each CPU op becomes kernels / cuDNN calls:
//!   Stats            -> GroupNormStats (partial + finalize into the CPU's [scale C, shift C])
//!   Conv             -> [Normalize (+SiLU) into scratch] [Upsample into scratch] Conv (cuDNN,
//!                       beta 1 when accumulating) AddBias [Add residual] [Copy back if staged]
//!   Attn             -> Attention (channel-major q/k/v thirds of the qkv buffer, + residual)
//!   Concat           -> Concat
//! This module is plain data, tested on the host by interpreting the steps with naive loops
//! and comparing with the CPU runtime (tests below); `executor` maps each step to one launch.

use crate::graph::{Bias, Graph, InitKind, Op};

use ldm_cuda::arena::{align_up, Region, ARENA_ALIGN};
use ldm_cuda::conv::Conv3dSpec;
use ldm_cuda::error::CudaError;
use ldm_cuda::geometry;

/// Where a bias vector lives: a parameter vector or a per-step dynamic slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BiasRef {
    Param(usize),
    Dynamic(usize),
}

/// One GPU operation on arena regions (all fp32, one sample).
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// GroupNorm statistics of x [channels, spatial] -> out [scale C, shift C].
    GroupNormStats {
        x: Region,
        channels: usize,
        spatial: usize,
        groups: usize,
        eps: f32,
        gamma: usize,
        beta: usize,
        out: Region,
    },
    /// out = x * scale + shift per channel (then SiLU).
    Normalize {
        x: Region,
        scale_shift: Region,
        channels: usize,
        spatial: usize,
        silu: bool,
        out: Region,
    },
    /// Nearest x2 upsampling of [rows, dims] into out.
    Upsample {
        x: Region,
        rows: usize,
        dims: [usize; 3],
        out: Region,
    },
    /// out (=|+=) conv(x, weight `weight`), shape `specs[spec]`.
    Conv {
        spec: usize,
        weight: usize,
        x: Region,
        out: Region,
        accumulate: bool,
    },
    /// x[c, :] += bias[c].
    AddBias {
        x: Region,
        bias: BiasRef,
        channels: usize,
        spatial: usize,
    },
    /// out = a + b over n floats.
    Add { out: Region, a: Region, b: Region },
    /// Byte copy.
    Copy { from: Region, to: Region },
    /// Self-attention over a [3C, tokens] qkv buffer, out (+)= residual.
    Attention {
        qkv: Region,
        residual: Option<Region>,
        channels: usize,
        tokens: usize,
        head_dim: usize,
        out: Region,
    },
    /// out = [a; b].
    Concat { a: Region, b: Region, out: Region },
}

/// The lowered plan: steps, distinct convolution shapes, arena size and scratch regions.
#[derive(Debug, Clone)]
pub struct Lowered {
    pub steps: Vec<Step>,
    /// Distinct convolution shapes (one cuDNN plan each).
    pub specs: Vec<Conv3dSpec>,
    /// Bytes of the activation part (the CPU plan's arena).
    pub activation_bytes: usize,
    /// Scratch regions (after the activations); zero-sized when unused.
    /// Per-conv scratch (normalised input, upsampled input, staged output), reused by every conv.
    pub scratch: Region,
    pub gn_partial: Region,
    /// End of the last region: the bytes to allocate (plus conv workspace, known on the GPU).
    pub total_bytes: usize,
}

fn region(g: &Graph, b: usize) -> Result<Region, CudaError> {
    let info = g
        .bufs
        .get(b)
        .ok_or_else(|| CudaError::Arena(format!("plan refers to missing buffer {b}")))?;
    let offset = info
        .offset
        .checked_mul(4)
        .ok_or_else(|| CudaError::Arena("buffer offset overflows".into()))?;
    let bytes = info
        .len
        .checked_mul(4)
        .ok_or_else(|| CudaError::Arena("buffer size overflows".into()))?;
    Ok(Region { offset, bytes })
}

/// The first `bytes` of a region (an op may use a prefix of its buffer).
fn prefix(r: Region, bytes: usize) -> Result<Region, CudaError> {
    if bytes > r.bytes {
        return Err(CudaError::Arena(format!(
            "op needs {bytes} bytes of a {}-byte buffer",
            r.bytes
        )));
    }
    Ok(Region {
        offset: r.offset,
        bytes,
    })
}

fn intern(specs: &mut Vec<Conv3dSpec>, s: Conv3dSpec) -> usize {
    match specs.iter().position(|&t| t == s) {
        Some(i) => i,
        None => {
            specs.push(s);
            specs.len() - 1
        }
    }
}

fn bias_ref(b: Bias) -> BiasRef {
    match b {
        Bias::Param(i) => BiasRef::Param(i),
        Bias::Dynamic(i) => BiasRef::Dynamic(i),
    }
}

/// Byte ranges (offset, bytes) inside the conv scratch region, and its end.
struct ScratchParts {
    norm: (usize, usize),
    up: (usize, usize),
    stage: (usize, usize),
    end: usize,
}

fn conv_scratch_parts(geom: &crate::conv::ConvGeom, norm: bool, staged: bool) -> ScratchParts {
    let mut end = 0usize;
    let mut take = |used: bool, bytes: usize| {
        if !used {
            return (end, 0);
        }
        let off = end.div_ceil(ARENA_ALIGN) * ARENA_ALIGN;
        end = off + bytes;
        (off, bytes)
    };
    let p_in = geom.din * geom.hin * geom.win;
    let norm = take(norm, 4 * geom.cin * p_in);
    let up = take(
        geom.up > 0,
        4 * geom.cin * geom.virt().iter().product::<usize>(),
    );
    let stage = take(
        staged,
        4 * geom.cout * geom.out_dims().iter().product::<usize>(),
    );
    ScratchParts {
        norm,
        up,
        stage,
        end,
    }
}

/// Lowers `g` (planned) into GPU steps.
pub fn lower(g: &Graph) -> Result<Lowered, CudaError> {
    let activation_bytes = g
        .arena_len
        .checked_mul(4)
        .ok_or_else(|| CudaError::Arena("arena size overflows".into()))?;
    // Scratch sizes first (bytes), then place them.
    // One conv's scratch holds, back to back and 256-aligned, its normalised input, its
    // upsampled input and its staged output (each only when used); convs run one after another,
    // so every conv reuses the same scratch region.
    let (mut scratch_bytes, mut partial_bytes) = (0usize, 0usize);
    for op in &g.ops {
        match *op {
            Op::Conv {
                g: geom,
                norm,
                staged,
                ..
            } => {
                let parts = conv_scratch_parts(&geom, norm.is_some(), staged);
                scratch_bytes = scratch_bytes.max(parts.end);
            }
            Op::Stats { c, p, groups, .. } => {
                let gn = geometry::groupnorm(1, c, p, groups)?;
                partial_bytes = partial_bytes.max(gn.partial_bytes() as usize);
            }
            _ => {}
        }
    }
    let mut end = activation_bytes;
    let mut place = |bytes: usize| -> Result<Region, CudaError> {
        let offset = align_up(end, ARENA_ALIGN)
            .ok_or_else(|| CudaError::Arena("scratch offset overflows".into()))?;
        end = offset
            .checked_add(bytes)
            .ok_or_else(|| CudaError::Arena("scratch size overflows".into()))?;
        Ok(Region { offset, bytes })
    };
    let scratch = place(scratch_bytes)?;
    let gn_partial = place(partial_bytes)?;
    let total_bytes = end;

    let mut steps = Vec::new();
    let mut specs = Vec::new();
    for op in &g.ops {
        match *op {
            Op::Stats {
                x,
                c,
                p,
                groups,
                eps,
                gamma,
                beta,
                out,
            } => {
                steps.push(Step::GroupNormStats {
                    x: prefix(region(g, x)?, 4 * c * p)?,
                    channels: c,
                    spatial: p,
                    groups,
                    eps,
                    gamma,
                    beta,
                    out: prefix(region(g, out)?, 8 * c)?,
                });
            }
            Op::Concat { a, b, out } => {
                let (ra, rb) = (region(g, a)?, region(g, b)?);
                steps.push(Step::Concat {
                    a: ra,
                    b: rb,
                    out: prefix(region(g, out)?, ra.bytes + rb.bytes)?,
                });
            }
            Op::Attn {
                qkv,
                res,
                c,
                n,
                dh,
                out,
            } => {
                let residual = match res {
                    Some(r) => Some(prefix(region(g, r)?, 4 * c * n)?),
                    None => None,
                };
                steps.push(Step::Attention {
                    qkv: prefix(region(g, qkv)?, 12 * c * n)?,
                    residual,
                    channels: c,
                    tokens: n,
                    head_dim: dh,
                    out: prefix(region(g, out)?, 4 * c * n)?,
                });
            }
            Op::Conv {
                g: geom,
                w,
                bias,
                x,
                norm,
                staged,
                out,
                init,
                ..
            } => {
                let p_in = geom.din * geom.hin * geom.win;
                let virt = geom.virt();
                let o = geom.out_dims();
                let p_out = o.iter().product::<usize>();
                let out_bytes = 4 * geom.cout * p_out;
                let mut input = prefix(region(g, x)?, 4 * geom.cin * p_in)?;
                let parts = conv_scratch_parts(&geom, norm.is_some(), staged);
                let sub = |(off, bytes): (usize, usize)| Region {
                    offset: scratch.offset + off,
                    bytes,
                };
                if let Some((ss, act)) = norm {
                    let dst = sub(parts.norm);
                    steps.push(Step::Normalize {
                        x: input,
                        scale_shift: prefix(region(g, ss)?, 8 * geom.cin)?,
                        channels: geom.cin,
                        spatial: p_in,
                        silu: act,
                        out: dst,
                    });
                    input = dst;
                }
                if geom.up > 0 {
                    if geom.up != 1 {
                        return Err(CudaError::Shape(format!(
                            "upsampling by 2^{} in one conv is not supported",
                            geom.up
                        )));
                    }
                    let dst = sub(parts.up);
                    steps.push(Step::Upsample {
                        x: input,
                        rows: geom.cin,
                        dims: [geom.din, geom.hin, geom.win],
                        out: dst,
                    });
                    input = dst;
                }
                let spec = intern(
                    &mut specs,
                    Conv3dSpec {
                        batch: 1,
                        in_channels: geom.cin,
                        out_channels: geom.cout,
                        in_dims: virt,
                        kernel: [geom.k; 3],
                        stride: [geom.stride; 3],
                        padding: [geom.pad; 3],
                    },
                );
                let target = prefix(region(g, out)?, out_bytes)?;
                let conv_out = if staged { sub(parts.stage) } else { target };
                let accumulate = matches!(init, InitKind::Accumulate) && !staged;
                steps.push(Step::Conv {
                    spec,
                    weight: w,
                    x: input,
                    out: conv_out,
                    accumulate,
                });
                steps.push(Step::AddBias {
                    x: conv_out,
                    bias: bias_ref(bias),
                    channels: geom.cout,
                    spatial: p_out,
                });
                match init {
                    InitKind::Bias => {}
                    InitKind::Residual(r) => {
                        let r = prefix(region(g, r)?, out_bytes)?;
                        steps.push(Step::Add {
                            out: conv_out,
                            a: conv_out,
                            b: r,
                        });
                    }
                    InitKind::Accumulate if staged => {
                        steps.push(Step::Add {
                            out: conv_out,
                            a: conv_out,
                            b: target,
                        });
                    }
                    InitKind::Accumulate => {}
                }
                if staged {
                    steps.push(Step::Copy {
                        from: conv_out,
                        to: target,
                    });
                }
            }
        }
    }
    Ok(Lowered {
        steps,
        specs,
        activation_bytes,
        scratch,
        gn_partial,
        total_bytes,
    })
}

#[cfg(test)]
mod tests {
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
        let mut params = Params::unpacked();
        let dec = build_decoder(
            cfg.decoder.as_ref().unwrap(),
            &store,
            latent,
            &mut params,
            1 << 12,
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
        let mut params = Params::unpacked();
        let u = build_unet(ucfg, &store, latent, &mut params, 1 << 12).unwrap();
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
        let mut params = Params::unpacked();
        let u = build_unet(
            cfg.unet.as_ref().unwrap(),
            &store,
            latent,
            &mut params,
            32 << 20,
        )
        .unwrap();
        let d = build_decoder(
            cfg.decoder.as_ref().unwrap(),
            &store,
            latent,
            &mut params,
            32 << 20,
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
        let wbytes: usize = params.matrices.iter().map(|m| 4 * m.data.len()).sum::<usize>()
            + params.vecs.iter().map(|v| 4 * v.len()).sum::<usize>();
        println!("weights (fp32, PyTorch layout): {:.2} GiB", gib(wbytes));
    }
}
