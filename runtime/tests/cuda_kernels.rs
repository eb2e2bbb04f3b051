//! GPU checks of the CUDA backend's kernels, cuBLAS/cuDNN setup and graph capture against
//! independent host references (naive f64 loops, the CPU's Philox and sampler updates).
//! Built only with `--features cuda`; every test prints why it skips when no usable GPU exists
//! (this is the case on CI), so `cargo test -p ldm-runtime --features cuda` passes everywhere
//! and runs the real checks on a GPU machine.
#![cfg(feature = "cuda")]

use ldm_cuda::conv::{Conv3dSpec, ConvPlan};
use ldm_cuda::gemm::{reference_gemm, GemmSpec};
use ldm_cuda::geometry;
use ldm_cuda::{
    ArenaLayout, AttentionArgs, CudaDevice, DevPtr, DeviceArena, NoiseStream, Region, StepGraph,
};
use ldm_runtime::sampler::{self, ddim_update, ddpm_update, pndm_update, prediction_code};
use ldm_runtime::schedule::Schedule;
use ldm_runtime::Sampler;
use ldm_weights::{DType, PredictionType, SchedulerConfig};

fn device_or_skip(test: &str) -> Option<CudaDevice> {
    match CudaDevice::new(0) {
        Ok(d) => Some(d),
        Err(e) => {
            println!("skipping {test}: {e}");
            None
        }
    }
}

fn bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// bf16 bits of an f32, round to nearest even (finite inputs).
fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut v = vec![0f32; n];
    ldm_runtime::philox_normal(seed, 0, &mut v);
    v
}

fn rel_l2(got: &[f32], want: &[f64]) -> f64 {
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).powi(2))
        .sum();
    let den: f64 = want.iter().map(|w| w * w).sum();
    (num / den.max(1e-300)).sqrt()
}

/// An arena with one region per requested size; regions in request order.
struct Scratch {
    arena: DeviceArena,
    regions: Vec<Region>,
}

impl Scratch {
    fn new(dev: &CudaDevice, sizes: &[usize]) -> Scratch {
        let mut layout = ArenaLayout::new();
        let regions = sizes.iter().map(|&s| layout.push(s).unwrap()).collect();
        Scratch {
            arena: DeviceArena::new(dev.stream(), &layout).unwrap(),
            regions,
        }
    }
    fn ptr(&self, i: usize) -> DevPtr {
        self.arena.ptr(self.regions[i]).unwrap()
    }
    fn put(&mut self, dev: &CudaDevice, i: usize, data: &[u8]) {
        self.arena
            .upload(dev.stream(), self.regions[i], data)
            .unwrap();
    }
    fn get(&self, dev: &CudaDevice, i: usize) -> Vec<u8> {
        dev.synchronize().unwrap();
        let mut out = vec![0u8; self.regions[i].bytes];
        self.arena
            .download(dev.stream(), self.regions[i], &mut out)
            .unwrap();
        out
    }
}

#[test]
fn philox_noise_is_bit_identical_to_the_cpu() {
    let Some(dev) = device_or_skip("philox") else {
        return;
    };
    let (n, seed, offset) = (100_003usize, 0x1234_5678_9abc_def0u64, 7u64);
    let s = Scratch::new(&dev, &[4 * n, 2 * n]);
    dev.kernels
        .philox_normal(DType::BF16, s.ptr(0), s.ptr(1), seed, offset, n)
        .unwrap();
    let gpu = floats(&s.get(&dev, 0));
    let mut cpu = vec![0f32; n];
    ldm_runtime::philox_normal(seed, offset, &mut cpu);
    let mismatched = gpu
        .iter()
        .zip(&cpu)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    println!("philox: {mismatched} of {n} elements differ from the CPU");
    assert_eq!(mismatched, 0);
    let half = s.get(&dev, 1);
    for i in (0..n).step_by(997) {
        assert_eq!(
            u16::from_le_bytes([half[2 * i], half[2 * i + 1]]),
            to_bf16(cpu[i])
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn groupnorm_reference(
    x: &[f32],
    c: usize,
    sp: usize,
    groups: usize,
    gamma: &[f32],
    beta: &[f32],
    silu: bool,
    batch: usize,
) -> Vec<f64> {
    let cg = c / groups;
    let mut out = vec![0f64; x.len()];
    for b in 0..batch {
        for g in 0..groups {
            let base = (b * c + g * cg) * sp;
            let vals = &x[base..base + cg * sp];
            let mean = vals.iter().map(|&v| v as f64).sum::<f64>() / vals.len() as f64;
            let var =
                vals.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / vals.len() as f64;
            let rstd = 1.0 / (var + 1e-6).sqrt();
            for ci in 0..cg {
                let ch = g * cg + ci;
                for s in 0..sp {
                    let i = base + ci * sp + s;
                    let mut y = (x[i] as f64 - mean) * rstd * gamma[ch] as f64 + beta[ch] as f64;
                    if silu {
                        y /= 1.0 + (-y).exp();
                    }
                    out[i] = y;
                }
            }
        }
    }
    out
}

/// Runs groupnorm_stats + groupnorm_apply on device buffers: x -> y through scale/shift.
#[allow(clippy::too_many_arguments)]
fn run_groupnorm(
    dev: &CudaDevice,
    dtype: DType,
    x_bytes: &[u8],
    gamma: &[f32],
    beta: &[f32],
    geom: &geometry::GroupNormGeometry,
    c: usize,
    sp: usize,
    groups: usize,
    silu: bool,
) -> (Vec<u8>, Vec<f32>) {
    let sizes = [
        x_bytes.len(),
        4 * c,
        4 * c,
        geom.partial_bytes() as usize,
        geom.scale_shift_bytes() as usize,
    ];
    let mut s = Scratch::new(dev, &sizes);
    s.put(dev, 0, x_bytes);
    s.put(dev, 1, &bytes(gamma));
    s.put(dev, 2, &bytes(beta));
    let k = &dev.kernels;
    k.groupnorm_stats(
        dtype,
        geom,
        s.ptr(0),
        s.ptr(1),
        s.ptr(2),
        s.ptr(3),
        s.ptr(4),
        c,
        groups,
        1e-6,
    )
    .unwrap();
    // In place, as the plan does for a normalised conv input held in scratch.
    k.groupnorm_apply(dtype, geom, s.ptr(0), s.ptr(0), s.ptr(4), c, sp, silu)
        .unwrap();
    (s.get(dev, 0), floats(&s.get(dev, 4)))
}

#[test]
fn groupnorm_silu_matches_a_float64_reference() {
    let Some(dev) = device_or_skip("groupnorm") else {
        return;
    };
    // Big enough for several splits per group.
    let (batch, c, dims, groups) = (2usize, 64usize, [10usize, 24, 40], 32usize);
    let sp = dims.iter().product::<usize>();
    let n = batch * c * sp;
    let x: Vec<f32> = noise(n, 3).iter().map(|v| v * 2.0 + 0.5).collect();
    let gamma: Vec<f32> = noise(c, 4).iter().map(|v| 1.0 + 0.1 * v).collect();
    let beta = noise(c, 5);
    let geom = geometry::groupnorm(batch, c, sp, groups).unwrap();
    assert!(geom.splits > 1);
    for silu in [false, true] {
        let want = groupnorm_reference(&x, c, sp, groups, &gamma, &beta, silu, batch);
        let (y, scale_shift) = run_groupnorm(
            &dev,
            DType::F32,
            &bytes(&x),
            &gamma,
            &beta,
            &geom,
            c,
            sp,
            groups,
            silu,
        );
        let err = rel_l2(&floats(&y), &want);
        println!("groupnorm f32 silu={silu}: relative L2 {err:.2e}");
        assert!(err < 1e-6, "{err}");
        // scale_shift layout per sample: [scale[C], shift[C]], as the CPU's Stats buffer.
        let (g0, x0) = (0usize, &x[..c / groups * sp]);
        let mean = x0.iter().map(|&v| v as f64).sum::<f64>() / x0.len() as f64;
        let var = x0.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / x0.len() as f64;
        let scale = gamma[g0] as f64 / (var + 1e-6).sqrt();
        assert!((scale_shift[0] as f64 - scale).abs() < 1e-5 * scale.abs());
        assert!((scale_shift[c] as f64 - (beta[0] as f64 - mean * scale)).abs() < 1e-5);
    }
    // bf16 storage, fp32 statistics.
    let xb: Vec<u8> = x.iter().flat_map(|&v| to_bf16(v).to_le_bytes()).collect();
    let xr: Vec<f32> = x.iter().map(|&v| from_bf16(to_bf16(v))).collect();
    let want = groupnorm_reference(&xr, c, sp, groups, &gamma, &beta, true, batch);
    let (y, _) = run_groupnorm(
        &dev,
        DType::BF16,
        &xb,
        &gamma,
        &beta,
        &geom,
        c,
        sp,
        groups,
        true,
    );
    let got: Vec<f32> = y
        .chunks_exact(2)
        .map(|h| from_bf16(u16::from_le_bytes([h[0], h[1]])))
        .collect();
    let err = rel_l2(&got, &want);
    println!("groupnorm bf16: relative L2 {err:.2e}");
    assert!(err < 1e-2, "{err}");
}

#[test]
fn attention_matches_naive_softmax_attention() {
    let Some(dev) = device_or_skip("attention") else {
        return;
    };
    let (batch, c, n, hd) = (2usize, 128usize, 301usize, 64usize);
    let qkv = noise(batch * 3 * c * n, 9);
    let bias = noise(3 * c, 10);
    let res = noise(batch * c * n, 11);
    let mut want = vec![0f64; batch * c * n];
    for b in 0..batch {
        let at = |part: usize, ch: usize, t: usize| {
            qkv[((b * 3 + part) * c + ch) * n + t] as f64 + bias[part * c + ch] as f64
        };
        for h in 0..c / hd {
            for i in 0..n {
                let scores: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..hd)
                            .map(|d| at(0, h * hd + d, i) * at(1, h * hd + d, j))
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let p: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = p.iter().sum();
                for d in 0..hd {
                    let ch = h * hd + d;
                    let o: f64 = (0..n).map(|j| p[j] * at(2, ch, j)).sum::<f64>() / z;
                    want[(b * c + ch) * n + i] = res[(b * c + ch) * n + i] as f64 + o;
                }
            }
        }
    }
    let mut s = Scratch::new(&dev, &[4 * qkv.len(), 4 * 3 * c, 4 * res.len()]);
    s.put(&dev, 0, &bytes(&qkv));
    s.put(&dev, 1, &bytes(&bias));
    s.put(&dev, 2, &bytes(&res));
    let (q, b0) = (s.ptr(0), s.ptr(1));
    let args = AttentionArgs {
        q,
        k: q.offset_by(4 * c * n),
        v: q.offset_by(8 * c * n),
        bias_q: b0,
        bias_k: b0.offset_by(4 * c),
        bias_v: b0.offset_by(8 * c),
        out: s.ptr(2),
        residual: s.ptr(2),
        batch,
        channels: c,
        tokens: n,
        head_dim: hd,
        qkv_batch_stride: 3 * c * n,
        out_batch_stride: c * n,
    };
    dev.kernels.attention(DType::F32, &args).unwrap();
    let got = floats(&s.get(&dev, 2));
    let err = rel_l2(&got, &want);
    println!("attention f32 (with residual in place): relative L2 {err:.2e}");
    assert!(err < 1e-5, "{err}");
}

#[test]
fn elementwise_kernels_are_exact() {
    let Some(dev) = device_or_skip("elementwise") else {
        return;
    };
    let (batch, ca, cb, dims) = (2usize, 3usize, 5usize, [3usize, 4, 5]);
    let sp = dims.iter().product::<usize>();
    let a = noise(batch * ca * sp, 1);
    let b = noise(batch * cb * sp, 2);
    let bias = noise(batch * ca, 3);
    let up_n = batch * ca * sp * 8;
    let mut s = Scratch::new(
        &dev,
        &[
            4 * a.len(),
            4 * b.len(),
            4 * (a.len() + b.len()),
            4 * bias.len(),
            4 * up_n,
            4 * a.len(),
        ],
    );
    s.put(&dev, 0, &bytes(&a));
    s.put(&dev, 1, &bytes(&b));
    s.put(&dev, 3, &bytes(&bias));
    let k = &dev.kernels;
    k.concat_channels(DType::F32, s.ptr(2), s.ptr(0), s.ptr(1), ca, cb, sp, batch)
        .unwrap();
    k.upsample_nearest2x(DType::F32, s.ptr(0), s.ptr(4), batch * ca, dims)
        .unwrap();
    k.silu(DType::F32, s.ptr(5), s.ptr(0), a.len()).unwrap();
    k.add_channel_bias(DType::F32, s.ptr(0), s.ptr(3), batch, ca, sp, ca)
        .unwrap();
    let cat = floats(&s.get(&dev, 2));
    for n in 0..batch {
        for ch in 0..ca + cb {
            for v in 0..sp {
                let want = if ch < ca {
                    a[(n * ca + ch) * sp + v]
                } else {
                    b[(n * cb + ch - ca) * sp + v]
                };
                assert_eq!(cat[(n * (ca + cb) + ch) * sp + v], want);
            }
        }
    }
    let up = floats(&s.get(&dev, 4));
    let [d, h, w] = dims;
    for r in 0..batch * ca {
        for z in 0..2 * d {
            for y in 0..2 * h {
                for x in 0..2 * w {
                    let o = ((r * 2 * d + z) * 2 * h + y) * 2 * w + x;
                    assert_eq!(up[o], a[((r * d + z / 2) * h + y / 2) * w + x / 2]);
                }
            }
        }
    }
    let biased = floats(&s.get(&dev, 0));
    for (i, (&g, &x)) in biased.iter().zip(&a).enumerate() {
        assert_eq!(g, x + bias[i / sp], "bias at {i}");
    }
    let silu = floats(&s.get(&dev, 5));
    for (&g, &x) in silu.iter().zip(&a) {
        let want = x as f64 / (1.0 + (-x as f64).exp());
        assert!(
            (g as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
            "silu({x}) = {g}, want {want}"
        );
    }
}

#[test]
fn timestep_embedding_matches_the_monai_formula() {
    let Some(dev) = device_or_skip("timestep_embedding") else {
        return;
    };
    let (batch, dim) = (2usize, 256usize);
    let ts = [980.0f32, 17.0, 0.0];
    let mut s = Scratch::new(&dev, &[4 * batch * dim, 4 * ts.len(), 4]);
    s.put(&dev, 1, &bytes(&ts));
    s.put(&dev, 2, &1i32.to_le_bytes());
    dev.kernels
        .timestep_embedding(DType::F32, s.ptr(0), s.ptr(1), s.ptr(2), batch, dim)
        .unwrap();
    let got = floats(&s.get(&dev, 0));
    let half = dim / 2;
    for b in 0..batch {
        for i in 0..dim {
            let f = (i % half) as f32;
            let freq = ((-(10000f32).ln() * f) / half as f32).exp();
            let arg = (ts[1] * freq) as f64;
            let want = if i < half { arg.cos() } else { arg.sin() };
            assert!(
                (got[b * dim + i] as f64 - want).abs() < 1e-5,
                "emb[{b},{i}] = {}, want {want}",
                got[b * dim + i]
            );
        }
    }
}

#[test]
fn sampler_kernels_replay_the_cpu_updates() {
    let Some(dev) = device_or_skip("sampler") else {
        return;
    };
    let mut cfg = SchedulerConfig::bundle();
    let sched = Schedule::new(&cfg).unwrap();
    let n = 10_007usize;
    let x0 = noise(n, 21);
    let eps = noise(n, 22);
    let no_noise = NoiseStream {
        seed: 0,
        offset: 0,
        stride: 0,
    };
    let same = |gpu: &[f32], cpu: &[f32]| gpu.iter().zip(cpu).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    // DDIM eta 0, 50 steps, every prediction type, clamped: state advanced by the device counter.
    cfg.ddim.clip_sample = true;
    for prediction in [PredictionType::Epsilon, PredictionType::Sample, PredictionType::VPrediction] {
        cfg.prediction_type = prediction;
        let plan = sampler::plan(&cfg, &sched, Sampler::Ddim { eta: 0.0 }, 50).unwrap();
        let mut s = Scratch::new(&dev, &[4 * n, 4 * n, 4 * plan.rows.len(), 4, 4 * n]);
        s.put(&dev, 0, &bytes(&x0));
        s.put(&dev, 1, &bytes(&eps));
        s.put(&dev, 2, &bytes(&plan.rows));
        dev.kernels.step_set(s.ptr(3), 0).unwrap();
        let mut cpu = x0.clone();
        for k in 0..plan.timesteps.len() {
            let (x, m, xt, c, st) = (s.ptr(0), s.ptr(1), s.ptr(4), s.ptr(2), s.ptr(3));
            let pred = prediction_code(prediction);
            dev.kernels.ddim_step(DType::F32, x, m, xt, c, st, pred, true, no_noise, n).unwrap();
            dev.kernels.step_advance(s.ptr(3)).unwrap();
            ddim_update(plan.row(k), prediction, true, &mut cpu, &eps, None);
        }
        let gpu = floats(&s.get(&dev, 0));
        assert_eq!(same(&gpu, &cpu), 0, "DDIM {prediction:?} differs from the CPU");
        assert_eq!(floats(&s.get(&dev, 4)), gpu, "x_t copy");
    }
    // DDPM with noise from the Philox stream: seed 5, step k uses offset 1000 + k * n.
    cfg.prediction_type = PredictionType::Epsilon;
    let plan = sampler::plan(&cfg, &sched, Sampler::Ddpm, 1000).unwrap();
    let ks = [0usize, 1, 2, 499, 997, 998, 999];
    let rows: Vec<f32> = ks.iter().flat_map(|&k| plan.row(k).to_vec()).collect();
    let mut s = Scratch::new(&dev, &[4 * n, 4 * n, 4 * rows.len(), 4]);
    s.put(&dev, 0, &bytes(&x0));
    s.put(&dev, 1, &bytes(&eps));
    s.put(&dev, 2, &bytes(&rows));
    dev.kernels.step_set(s.ptr(3), 0).unwrap();
    let stream = NoiseStream {
        seed: 5,
        offset: 1000,
        stride: n as u64,
    };
    let mut cpu = x0.clone();
    let mut z = vec![0f32; n];
    for (j, &k) in ks.iter().enumerate() {
        let (x, m, c, st) = (s.ptr(0), s.ptr(1), s.ptr(2), s.ptr(3));
        dev.kernels.ddpm_step(DType::F32, x, m, DevPtr::NULL, c, st, 0, true, stream, n).unwrap();
        dev.kernels.step_advance(s.ptr(3)).unwrap();
        ldm_runtime::philox_normal(5, 1000 + (j * n) as u64, &mut z);
        ddpm_update(plan.row(k), PredictionType::Epsilon, true, &mut cpu, &eps, &z);
    }
    let mismatched = same(&floats(&s.get(&dev, 0)), &cpu);
    println!("DDPM: {mismatched} of {n} elements differ from the CPU after {} steps", ks.len());
    assert_eq!(mismatched, 0);
    // PNDM with the Runge-Kutta warm-up and v-prediction: a new model output every step.
    cfg.prediction_type = PredictionType::VPrediction;
    let plan = sampler::plan(&cfg, &sched, Sampler::Pndm, 10).unwrap();
    let state_len = sampler::PNDM_STATE_VECTORS * n;
    let mut s = Scratch::new(&dev, &[4 * n, 4 * n, 4 * plan.rows.len(), 4, 4 * state_len]);
    s.put(&dev, 0, &bytes(&x0));
    s.put(&dev, 2, &bytes(&plan.rows));
    dev.kernels.step_set(s.ptr(3), 0).unwrap();
    let (mut cpu, mut state) = (x0.clone(), vec![0f32; state_len]);
    for k in 0..plan.timesteps.len() {
        let m = noise(n, 100 + k as u64);
        s.put(&dev, 1, &bytes(&m));
        let (x, mp, c, st, state_ptr) = (s.ptr(0), s.ptr(1), s.ptr(2), s.ptr(3), s.ptr(4));
        dev.kernels.pndm_step(DType::F32, x, mp, DevPtr::NULL, c, st, 2, state_ptr, n).unwrap();
        dev.kernels.step_advance(s.ptr(3)).unwrap();
        pndm_update(plan.row(k), PredictionType::VPrediction, &mut cpu, &m, &mut state);
    }
    assert_eq!(same(&floats(&s.get(&dev, 0)), &cpu), 0, "PNDM differs from the CPU");
}

#[test]
fn cublas_linear_and_cudnn_conv_match_references() {
    let Some(dev) = device_or_skip("cublas/cudnn") else {
        return;
    };
    // Linear via cuBLAS: Y[rows, out] = X W^T.
    let (rows, inf, outf) = (3usize, 64usize, 96usize);
    let x = noise(rows * inf, 31);
    let w = noise(outf * inf, 32);
    let spec = GemmSpec::linear(rows, inf, outf).unwrap();
    let mut want = vec![0f32; rows * outf];
    reference_gemm(&spec, &w, &x, &mut want);
    let mut s = Scratch::new(
        &dev,
        &[
            4 * x.len(),
            4 * w.len(),
            4 * want.len(),
            ldm_cuda::gemm::CUBLAS_WORKSPACE_BYTES,
        ],
    );
    s.put(&dev, 0, &bytes(&x));
    s.put(&dev, 1, &bytes(&w));
    unsafe {
        dev.blas
            .set_workspace(s.ptr(3), ldm_cuda::gemm::CUBLAS_WORKSPACE_BYTES)
            .unwrap();
        dev.blas
            .gemm(&spec, DType::F32, s.ptr(1), s.ptr(0), s.ptr(2), 0.0)
            .unwrap();
    }
    let got = floats(&s.get(&dev, 2));
    let err = rel_l2(&got, &want.iter().map(|&v| v as f64).collect::<Vec<_>>());
    println!("cuBLAS linear f32: relative L2 {err:.2e}");
    assert!(err < 1e-6, "{err}");

    // 3x3x3 conv via cuDNN vs a naive f64 loop.
    let spec = Conv3dSpec::same(1, 8, 16, [6, 7, 5], 3);
    let [d, h, wd] = spec.in_dims;
    let xin = noise(8 * d * h * wd, 33);
    let wt = noise(16 * 8 * 27, 34);
    let mut want = vec![0f64; 16 * d * h * wd];
    for o in 0..16 {
        for z in 0..d {
            for y in 0..h {
                for xx in 0..wd {
                    let mut acc = 0f64;
                    for ci in 0..8 {
                        for kz in 0..3 {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iz, iy, ix) = (z + kz, y + ky, xx + kx);
                                    if iz < 1 || iy < 1 || ix < 1 || iz > d || iy > h || ix > wd {
                                        continue;
                                    }
                                    let xv =
                                        xin[((ci * d + iz - 1) * h + iy - 1) * wd + ix - 1] as f64;
                                    acc +=
                                        xv * wt[(((o * 8 + ci) * 3 + kz) * 3 + ky) * 3 + kx] as f64;
                                }
                            }
                        }
                    }
                    want[((o * d + z) * h + y) * wd + xx] = acc;
                }
            }
        }
    }
    let plan = ConvPlan::new(&dev.dnn, spec, DType::F32, 256 << 20).unwrap();
    let mut s = Scratch::new(
        &dev,
        &[
            4 * xin.len(),
            4 * wt.len(),
            4 * want.len(),
            plan.workspace_bytes.max(1),
        ],
    );
    s.put(&dev, 0, &bytes(&xin));
    s.put(&dev, 1, &bytes(&wt));
    unsafe {
        plan.forward(&dev.dnn, s.ptr(0), s.ptr(1), s.ptr(2), s.ptr(3), false)
            .unwrap()
    };
    let got = floats(&s.get(&dev, 2));
    let err = rel_l2(&got, &want);
    println!(
        "cuDNN conv3d f32 (algo {:?}, workspace {} B): relative L2 {err:.2e}",
        plan.algo, plan.workspace_bytes
    );
    assert!(err < 1e-6, "{err}");
}

#[test]
fn a_captured_step_replays_without_allocating() {
    let Some(dev) = device_or_skip("graph capture") else {
        return;
    };
    let n = 4096usize;
    let ones = vec![1f32; n];
    let mut s = Scratch::new(&dev, &[4 * n, 4 * n, 4]);
    s.put(&dev, 1, &bytes(&ones));
    dev.kernels.step_set(s.ptr(2), 0).unwrap();
    dev.synchronize().unwrap();
    let (acc, one, step) = (s.ptr(0), s.ptr(1), s.ptr(2));
    let graph = StepGraph::capture(dev.stream(), || {
        dev.kernels.add(DType::F32, acc, acc, one, n)?;
        dev.kernels.step_advance(step)
    })
    .unwrap();
    dev.synchronize().unwrap();
    let before = dev.memory_info().unwrap().0;
    for _ in 0..50 {
        graph.replay().unwrap();
    }
    dev.synchronize().unwrap();
    let after = dev.memory_info().unwrap().0;
    assert_eq!(
        before, after,
        "free device memory changed across 50 replays"
    );
    assert!(floats(&s.get(&dev, 0)).iter().all(|&v| v == 50.0));
    assert_eq!(
        i32::from_le_bytes(s.get(&dev, 2)[..4].try_into().unwrap()),
        50
    );
}
