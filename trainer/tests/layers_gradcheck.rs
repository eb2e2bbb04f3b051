//! Finite-difference gradient checks (f32, central differences, eps 1e-2) for every layer on
//! tiny shapes, plus forward checks against naive reference implementations.

mod common;

use common::{gradcheck, rel_l2, Rng};
use ldm_trainer::layers::act::*;
use ldm_trainer::layers::attention::Attention;
use ldm_trainer::layers::concat::{concat_backward, concat_forward};
use ldm_trainer::layers::conv3d::Conv3d;
use ldm_trainer::layers::linear::Linear;
use ldm_trainer::layers::norm::GroupNorm;
use ldm_trainer::layers::timestep::timestep_embedding;
use ldm_trainer::layers::upsample::{upsample2_backward, upsample2_forward};
use ldm_trainer::layers::Dims;
use ldm_trainer::params::ParamStore;

const TOL: f64 = 2e-3;

fn init(store: &ParamStore, seed: u64) -> Vec<f32> {
    Rng(seed).vec(store.len(), 0.5)
}

/// Direct (naive) convolution used as the forward reference.
fn naive_conv(conv: &Conv3d, p: &[f32], x: &[f32], xd: Dims) -> Vec<f32> {
    let yd = conv.out_dims(xd).unwrap();
    let w = conv.weight.of(p);
    let [kd, kh, kw] = conv.kernel;
    let mut y = vec![0.0f32; yd.numel()];
    for n in 0..xd.n {
        for co in 0..conv.cout {
            for od in 0..yd.d {
                for oh in 0..yd.h {
                    for ow in 0..yd.w {
                        let mut acc = conv.bias.map_or(0.0, |b| b.of(p)[co] as f64);
                        for ci in 0..conv.cin {
                            for a in 0..kd {
                                for b in 0..kh {
                                    for c in 0..kw {
                                        let id = (od * conv.stride[0] + a) as isize - conv.pad_lo[0] as isize;
                                        let ih = (oh * conv.stride[1] + b) as isize - conv.pad_lo[1] as isize;
                                        let iw = (ow * conv.stride[2] + c) as isize - conv.pad_lo[2] as isize;
                                        if id < 0 || ih < 0 || iw < 0 || id >= xd.d as isize || ih >= xd.h as isize || iw >= xd.w as isize {
                                            continue;
                                        }
                                        let xi = (((n * xd.c + ci) * xd.d + id as usize) * xd.h + ih as usize) * xd.w + iw as usize;
                                        let wi = (((co * conv.cin + ci) * kd + a) * kh + b) * kw + c;
                                        acc += x[xi] as f64 * w[wi] as f64;
                                    }
                                }
                            }
                        }
                        y[(((n * yd.c + co) * yd.d + od) * yd.h + oh) * yd.w + ow] = acc as f32;
                    }
                }
            }
        }
    }
    y
}

#[allow(clippy::too_many_arguments)]
fn check_conv(cin: usize, cout: usize, k: usize, s: usize, pad: (usize, usize), bias: bool, xd: Dims, budget: Option<usize>) {
    check_conv_tiles(cin, cout, k, s, pad, bias, xd, budget, None);
}

#[allow(clippy::too_many_arguments)]
fn check_conv_tiles(cin: usize, cout: usize, k: usize, s: usize, pad: (usize, usize), bias: bool, xd: Dims, budget: Option<usize>, tiles: Option<usize>) {
    let mut store = ParamStore::new();
    let mut conv = Conv3d::new(&mut store, "c", cin, cout, k, s, pad.0, bias).unwrap().with_padding(pad.0, pad.1);
    if let Some(b) = budget {
        conv.col_budget = b;
    }
    conv.tile_cols = tiles;
    let p = init(&store, 1);
    let x = Rng(2).vec(xd.numel(), 1.0);
    let (y, _) = conv.forward(&p, &x, xd).unwrap();
    let want = naive_conv(&conv, &p, &x, xd);
    assert!(rel_l2(&y, &want) < 1e-6, "forward vs naive: {}", rel_l2(&y, &want));
    let (ex, ep) = gradcheck(
        &p,
        &x,
        |p, x| conv.forward(p, x, xd).unwrap().0,
        |p, g, x, dy| conv.backward(p, g, x, xd, dy).unwrap(),
        40,
        3,
    );
    assert!(ex < TOL && ep < TOL, "conv k{k} s{s} pad{pad:?}: dx {ex:e} dparam {ep:e}");
}

#[test]
fn conv3x3_stride1_pad1() {
    check_conv(3, 4, 3, 1, (1, 1), true, Dims::new(2, 3, 4, 5, 3), None);
}

#[test]
fn conv_strided_multi_slab_matches() {
    // A tiny column budget forces one output depth slice per slab (slab path: stride 2).
    check_conv(2, 3, 3, 2, (1, 1), true, Dims::new(2, 2, 6, 4, 3), Some(1));
}

#[test]
fn conv3x3_tiles_cross_rows_and_planes() {
    // 5-column tiles start mid-row (W = 3) and mid-plane; batch of 2 shares the tile list.
    check_conv_tiles(2, 3, 3, 1, (1, 1), true, Dims::new(2, 2, 3, 4, 3), None, Some(5));
    check_conv_tiles(3, 2, 3, 1, (1, 1), false, Dims::new(1, 3, 2, 3, 5), None, Some(1));
    // Kernel 3 without padding ("valid") also takes the tiled path.
    check_conv_tiles(2, 2, 3, 1, (0, 0), true, Dims::new(1, 2, 4, 4, 5), None, Some(7));
}

#[test]
fn conv1x1_pointwise() {
    check_conv(5, 3, 1, 1, (0, 0), true, Dims::new(2, 5, 3, 2, 4), None);
}

#[test]
fn conv_stride2_symmetric_pad() {
    check_conv(2, 3, 3, 2, (1, 1), true, Dims::new(1, 2, 6, 4, 5), None);
}

#[test]
fn conv_stride2_encoder_asymmetric_end_pad() {
    check_conv(2, 3, 3, 2, (0, 1), true, Dims::new(1, 2, 6, 4, 4), None);
}

#[test]
fn conv_kernel4_stride2_no_bias() {
    check_conv(2, 3, 4, 2, (1, 1), false, Dims::new(1, 2, 6, 6, 4), None);
}

#[test]
fn conv_kernel4_stride1() {
    check_conv(2, 2, 4, 1, (1, 1), true, Dims::new(1, 2, 4, 5, 4), None);
}

#[test]
fn conv_rejects_bad_input() {
    let mut store = ParamStore::new();
    let conv = Conv3d::new(&mut store, "c", 2, 3, 3, 1, 1, true).unwrap();
    let p = init(&store, 1);
    assert!(conv.forward(&p, &[0.0; 10], Dims::new(1, 2, 2, 2, 2)).is_err());
    assert!(conv.forward(&p, &[0.0; 16], Dims::new(1, 3, 2, 2, 2)).is_err());
    let big = Conv3d::new(&mut store, "d", 1, 1, 4, 1, 0, true).unwrap();
    assert!(big.out_dims(Dims::new(1, 1, 2, 8, 8)).is_err());
}

#[test]
fn group_norm_affine() {
    let mut store = ParamStore::new();
    let gn = GroupNorm::new(&mut store, "n", 6, 3, 1e-6).unwrap();
    let mut p = init(&store, 4);
    p.iter_mut().take(6).for_each(|v| *v += 1.0);
    let xd = Dims::new(2, 6, 3, 2, 2);
    let x: Vec<f32> = Rng(5).vec(xd.numel(), 2.0).iter().map(|v| v + 0.3).collect();
    // Forward: each group normalised to mean 0 / var 1 before the affine.
    let id = GroupNorm { affine: None, ..gn.clone() };
    let (y, _) = id.forward(&[], &x, xd).unwrap();
    for grp in y.chunks(2 * 12) {
        let m: f64 = grp.iter().map(|&v| v as f64).sum::<f64>() / grp.len() as f64;
        let v: f64 = grp.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / grp.len() as f64;
        assert!(m.abs() < 1e-6 && (v - 1.0).abs() < 1e-4, "mean {m} var {v}");
    }
    let (ex, ep) = gradcheck(
        &p,
        &x,
        |p, x| gn.forward(p, x, xd).unwrap().0,
        |p, g, x, dy| {
            let (_, st) = gn.forward(p, x, xd).unwrap();
            gn.backward(p, g, x, xd, &st, dy).unwrap()
        },
        40,
        6,
    );
    assert!(ex < TOL && ep < TOL, "group norm: dx {ex:e} dparam {ep:e}");
}

#[test]
fn instance_norm_no_affine() {
    let inorm = GroupNorm::instance(3, 1e-5);
    let xd = Dims::new(2, 3, 2, 3, 2);
    let x = Rng(7).vec(xd.numel(), 1.5);
    let (ex, _) = gradcheck(
        &[],
        &x,
        |p, x| inorm.forward(p, x, xd).unwrap().0,
        |p, g, x, dy| {
            let (_, st) = inorm.forward(p, x, xd).unwrap();
            inorm.backward(p, g, x, xd, &st, dy).unwrap()
        },
        40,
        8,
    );
    assert!(ex < TOL, "instance norm: dx {ex:e}");
}

#[test]
fn silu_and_leaky_relu() {
    // Keep leaky ReLU inputs away from the kink at 0.
    let x: Vec<f32> = Rng(9).vec(50, 2.0).iter().map(|&v| if v.abs() < 0.05 { v + 0.1 } else { v }).collect();
    let (ex, _) = gradcheck(&[], &x, |_, x| silu_forward(x), |_, _, x, dy| silu_backward(x, dy).unwrap(), 50, 10);
    assert!(ex < TOL, "silu dx {ex:e}");
    let (ex, _) = gradcheck(
        &[],
        &x,
        |_, x| leaky_relu_forward(x, 0.2),
        |_, _, x, dy| leaky_relu_backward(x, dy, 0.2).unwrap(),
        50,
        11,
    );
    assert!(ex < TOL, "leaky relu dx {ex:e}");
    assert_eq!(leaky_relu_forward(&[-1.0, 2.0], 0.2), vec![-0.2, 2.0]);
    let s = silu_forward(&[1.0]);
    assert!((s[0] - 1.0 / (1.0 + (-1.0f32).exp())).abs() < 1e-7);
}

#[test]
fn linear() {
    let mut store = ParamStore::new();
    let lin = Linear::new(&mut store, "l", 5, 4, true).unwrap();
    let p = init(&store, 12);
    let x = Rng(13).vec(3 * 5, 1.0);
    let y = lin.forward(&p, &x, 3).unwrap();
    let w = lin.weight.of(&p);
    let b = lin.bias.unwrap().of(&p);
    let want: f32 = (0..5).map(|i| x[5 + i] * w[2 * 5 + i]).sum::<f32>() + b[2];
    assert!((y[4 + 2] - want).abs() < 1e-6);
    let (ex, ep) = gradcheck(&p, &x, |p, x| lin.forward(p, x, 3).unwrap(), |p, g, x, dy| lin.backward(p, g, x, 3, dy).unwrap(), 40, 14);
    assert!(ex < TOL && ep < TOL, "linear: dx {ex:e} dparam {ep:e}");
}

#[test]
fn upsample_nearest() {
    let xd = Dims::new(1, 2, 2, 3, 2);
    let x = Rng(15).vec(xd.numel(), 1.0);
    let (y, yd) = upsample2_forward(&x, xd).unwrap();
    assert_eq!(yd, Dims::new(1, 2, 4, 6, 4));
    // y[c=1, d=3, h=5, w=1] = x[c=1, d=1, h=2, w=0]
    assert_eq!(y[((4 + 3) * 6 + 5) * 4 + 1], x[((2 + 1) * 3 + 2) * 2]);
    let (ex, _) = gradcheck(&[], &x, |_, x| upsample2_forward(x, xd).unwrap().0, |_, _, _, dy| upsample2_backward(dy, xd).unwrap(), 24, 16);
    assert!(ex < TOL, "upsample dx {ex:e}");
}

#[test]
fn concat_channels() {
    let (ad, bd) = (Dims::new(2, 2, 1, 2, 2), Dims::new(2, 3, 1, 2, 2));
    let a = Rng(17).vec(ad.numel(), 1.0);
    let b = Rng(18).vec(bd.numel(), 1.0);
    let (y, yd) = concat_forward(&a, ad, &b, bd).unwrap();
    assert_eq!(yd.c, 5);
    assert_eq!(&y[..8], &a[..8]);
    assert_eq!(&y[8..20], &b[..12]);
    assert_eq!(&y[20..28], &a[8..16]);
    let (da, db) = concat_backward(&y, yd, 2).unwrap();
    assert_eq!((da, db), (a, b));
    assert!(concat_forward(&y, yd, &y[..4], Dims::new(1, 1, 1, 2, 2)).is_err());
}

fn check_attention(proj: bool, heads_ch: usize, xd: Dims, seed: u64) {
    let mut store = ParamStore::new();
    let att = Attention::new(&mut store, "a", xd.c, heads_ch, proj).unwrap();
    let p = init(&store, seed);
    let x = Rng(seed + 1).vec(xd.numel(), 1.0);
    let (ex, ep) = gradcheck(
        &p,
        &x,
        |p, x| att.forward(p, x, xd).unwrap().0,
        |p, g, x, dy| {
            let (_, cache) = att.forward(p, x, xd).unwrap();
            att.backward(p, g, xd, &cache, dy).unwrap()
        },
        40,
        seed + 2,
    );
    assert!(ex < TOL && ep < TOL, "attention proj={proj}: dx {ex:e} dparam {ep:e}");
}

#[test]
fn attention_two_heads_no_projection() {
    check_attention(false, 2, Dims::new(2, 4, 2, 2, 1), 20);
}

#[test]
fn attention_one_head_with_projection() {
    check_attention(true, 4, Dims::new(1, 4, 1, 3, 2), 30);
}

#[test]
fn attention_forward_reference() {
    // Single head, 2 tokens: compare with a hand-computed softmax attention.
    let mut store = ParamStore::new();
    let att = Attention::new(&mut store, "a", 2, 2, false).unwrap();
    let p = init(&store, 40);
    let xd = Dims::new(1, 2, 1, 1, 2);
    let x = Rng(41).vec(4, 1.0);
    let (y, _) = att.forward(&p, &x, xd).unwrap();
    let tok = |i: usize| [x[i], x[2 + i]];
    let lin = |l: &Linear, t: [f32; 2]| {
        let (w, b) = (l.weight.of(&p), l.bias.unwrap().of(&p));
        [w[0] * t[0] + w[1] * t[1] + b[0], w[2] * t[0] + w[3] * t[1] + b[1]]
    };
    for i in 0..2 {
        let q = lin(&att.to_q, tok(i));
        let sc: Vec<f32> = (0..2).map(|j| {
            let k = lin(&att.to_k, tok(j));
            (q[0] * k[0] + q[1] * k[1]) / 2f32.sqrt()
        }).collect();
        let m = sc[0].max(sc[1]);
        let e: Vec<f32> = sc.iter().map(|s| (s - m).exp()).collect();
        let z = e[0] + e[1];
        for c in 0..2 {
            let o: f32 = (0..2).map(|j| e[j] / z * lin(&att.to_v, tok(j))[c]).sum();
            assert!((y[c * 2 + i] - o).abs() < 1e-5, "token {i} channel {c}: {} vs {o}", y[c * 2 + i]);
        }
    }
}

#[test]
fn timestep_embedding_cos_first() {
    let e = timestep_embedding(&[0.0, 10.0], 6);
    assert_eq!(&e[..6], &[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
    let f1 = (-(10000f32).ln() / 3.0).exp();
    assert!((e[6 + 1] - (10.0 * f1).cos()).abs() < 1e-6);
    assert!((e[6 + 4] - (10.0 * f1).sin()).abs() < 1e-6);
    assert_eq!(timestep_embedding(&[3.0], 5).len(), 5);
    assert_eq!(timestep_embedding(&[3.0], 5)[4], 0.0);
}

#[test]
fn conv_without_input_grad_gives_same_parameter_gradients() {
    for (k, s, pad) in [(3usize, 1usize, 1usize), (3, 2, 1), (1, 1, 0)] {
        let mut store = ParamStore::new();
        let mut conv = Conv3d::new(&mut store, "c", 2, 3, k, s, pad, true).unwrap();
        let p = init(&store, 50);
        let xd = Dims::new(1, 2, 4, 4, 4);
        let x = Rng(51).vec(xd.numel(), 1.0);
        let (y, _) = conv.forward(&p, &x, xd).unwrap();
        let mut g1 = vec![0.0f32; p.len()];
        let dx = conv.backward(&p, &mut g1, &x, xd, &y).unwrap();
        assert_eq!(dx.len(), xd.numel());
        conv.input_grad = false;
        let mut g2 = vec![0.0f32; p.len()];
        assert!(conv.backward(&p, &mut g2, &x, xd, &y).unwrap().is_empty());
        assert_eq!(g1, g2);
    }
}

#[test]
fn parallel_gemm_is_bitwise_the_serial_gemm() {
    use ldm_trainer::layers::gemm::{par_sgemm, sgemm_strided};
    let (m, k, n) = (100usize, 70usize, 90usize);
    let a = Rng(60).vec(m * k, 1.0);
    let b = Rng(61).vec(k * n, 1.0);
    let mut serial = vec![0.0f32; m * n];
    sgemm_strided(m, k, n, 1.0, &a, k, 1, &b, n, 1, 0.0, &mut serial, n, 1);
    for threads in [1usize, 2, 3, 7] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let mut c = vec![0.0f32; m * n];
        // Transposed A view too: a^T stored as [k, m] is read with rsa = 1, csa = m.
        pool.install(|| par_sgemm(m, k, n, 1.0, &a, k, 1, &b, n, 1, 0.0, &mut c, n, 1));
        assert!(c.iter().zip(&serial).all(|(x, y)| x.to_bits() == y.to_bits()), "{threads} threads");
    }
    let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    let mut c = vec![0.0f32; m * n];
    pool.install(|| par_sgemm(m, k, n, 1.0, &at, 1, m, &b, n, 1, 0.0, &mut c, n, 1));
    let e = rel_l2(&c, &serial);
    assert!(e < 1e-6, "transposed A: {e:e}");
}
