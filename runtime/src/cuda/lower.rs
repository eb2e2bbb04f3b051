//! Lowers the backend-neutral graph (`graph::Graph`, fp32, one sample) into GPU steps over byte
//! regions of one device arena, so the CUDA backend executes exactly the graph the CPU executes.
//! The activation regions keep the graph's offsets (liveness-based reuse included); scratch
//! for normalised conv inputs, upsampled conv inputs, in-place (staged) 1x1 conv outputs and
//! GroupNorm partial statistics follows them. Each op becomes kernels / cuDNN calls:
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
    /// Bytes of the activation part (the graph's arena).
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
                g: geom, norm, ..
            } => {
                let parts = conv_scratch_parts(&geom, norm.is_some(), op.in_place());
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
                out,
                init,
            } => {
                let staged = op.in_place();
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
mod tests;
