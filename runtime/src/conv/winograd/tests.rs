//! Winograd against the implicit GEMM: odd sizes (edge tiles), channel counts that are not
//! multiples of the panel height or of KC, upsampled inputs, slab windows that start on an odd
//! plane, every initialisation, every kernel this CPU runs, and thread counts.

use super::*;
use crate::conv::{conv_with as direct_with, pack_len, shared_pack_len, ConvCall, ConvScratch};

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

struct Case {
    g: ConvGeom,
    x: Vec<f32>,
    bias: Vec<f32>,
    res: Vec<f32>,
    direct: PackedA,
    wino: WinogradWeights,
}

impl Case {
    fn new(g: ConvGeom, seed: u64) -> Case {
        assert!(applies(&g), "{g:?}");
        let x = values(g.cin * g.din * g.hin * g.win, seed);
        let w: Vec<f32> = values(g.cout * g.kdim(), seed + 1)
            .iter()
            .map(|v| v * 0.2)
            .collect();
        let o = g.out_dims();
        let wino = WinogradWeights::new(&w, g.cout, g.cin, g.up);
        // The plan counts the weights before transforming them.
        assert_eq!(
            wino.bytes(),
            WinogradWeights::bytes_for(g.cout, g.cin, g.up)
        );
        Case {
            bias: values(g.cout, seed + 2),
            res: values(g.cout * o[0] * o[1] * o[2], seed + 3),
            direct: PackedA::pack(&w, g.cout, g.kdim()),
            wino,
            x,
            g,
        }
    }

    /// Output planes `od0..od1` into a window of exactly those planes, from the input planes
    /// `z0..z1` (pre-upsampling), with `init` (Accumulate starts from `res`).
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        kernel: Kernel,
        threads: usize,
        wino: bool,
        od0: usize,
        od1: usize,
        z0: usize,
        z1: usize,
        init: u8,
    ) -> Vec<f32> {
        let g = &self.g;
        let pool = Pool::new(threads).unwrap();
        let o = g.out_dims();
        let plane = o[1] * o[2];
        let in_plane = g.hin * g.win;
        let mut xin = Vec::new();
        for c in 0..g.cin {
            xin.extend_from_slice(
                &self.x[(c * g.din + z0) * in_plane..(c * g.din + z1) * in_plane],
            );
        }
        let input = ConvInput {
            data: &xin,
            z0,
            planes: z1 - z0,
        };
        let win = OutWindow {
            z0: od0,
            planes: od1 - od0,
        };
        let mut res = Vec::new();
        for c in 0..g.cout {
            res.extend_from_slice(&self.res[(c * o[0] + od0) * plane..(c * o[0] + od1) * plane]);
        }
        let mut y = if init == 2 {
            res.clone()
        } else {
            vec![0f32; res.len()]
        };
        let init = match init {
            0 => Init::Bias,
            1 => Init::BiasResidual(&res),
            _ => Init::Accumulate,
        };
        if wino {
            let mut ws = vec![f32::NAN; threads * thread_ws_len(g)];
            let call = ConvCall { g, bias: &self.bias, input: &input, od0, od1, win, init };
            conv_with(kernel, &pool, &call, &self.wino, &mut y, PackWs(ws.as_mut_ptr(), ws.len()));
        } else {
            let mut ws = vec![0f32; threads * pack_len()];
            let mut sh = vec![0f32; shared_pack_len(g)];
            let (wsp, shp) = (
                PackWs(ws.as_mut_ptr(), ws.len()),
                PackWs(sh.as_mut_ptr(), sh.len()),
            );
            let call = ConvCall { g, bias: &self.bias, input: &input, od0, od1, win, init };
            direct_with(kernel, &pool, &call, &self.direct, &mut y, ConvScratch { pack: wsp, shared: shp });
        }
        y
    }
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 2e-6 * scale.max(1.0),
            "{what} at {i}: {a} vs {b} (scale {scale})"
        );
    }
}

/// Input planes (pre-upsampling) that output planes `od0..od1` read, as `conv_op` passes them.
fn input_window(g: &ConvGeom, od0: usize, od1: usize) -> (usize, usize) {
    let vd = g.din << g.up;
    (
        (od0.saturating_sub(1)) >> g.up,
        (((od1 + 1).min(vd) - 1) >> g.up) + 1,
    )
}

#[test]
fn winograd_matches_the_implicit_gemm() {
    let shapes = [
        // Odd sizes in every dimension: edge tiles; 17 and 19 channels: partial panels.
        ConvGeom {
            cin: 17,
            din: 7,
            hin: 7,
            win: 9,
            up: 0,
            k: 3,
            stride: 1,
            pad: 1,
            cout: 19,
        },
        // More than one KC block of input channels, more than ROWS_MAX output rows.
        ConvGeom {
            cin: 130,
            din: 7,
            hin: 7,
            win: 9,
            up: 0,
            k: 3,
            stride: 1,
            pad: 1,
            cout: 140,
        },
        // Upsampled input (odd source sizes).
        ConvGeom {
            cin: 16,
            din: 4,
            hin: 4,
            win: 5,
            up: 1,
            k: 3,
            stride: 1,
            pad: 1,
            cout: 16,
        },
    ];
    for (n, g) in shapes.into_iter().enumerate() {
        let case = Case::new(g, 10 * n as u64);
        let d = g.out_dims()[0];
        for kernel in Kernel::ALL.into_iter().filter(|k| k.available()) {
            for init in 0..3 {
                let want = case.run(kernel, 2, false, 0, d, 0, g.din, init);
                let got = case.run(kernel, 2, true, 0, d, 0, g.din, init);
                assert_close(&format!("{kernel} {g:?} init {init}"), &got, &want);
                // The thread count changes nothing.
                for threads in [1, 3] {
                    assert_eq!(
                        case.run(kernel, threads, true, 0, d, 0, g.din, init),
                        got,
                        "{kernel} {g:?} {threads} threads"
                    );
                }
            }
        }
    }
}

#[test]
fn winograd_slabs_equal_the_whole_volume() {
    // Slabs starting on odd and even planes, with only the input planes they need.
    for (g, slabs) in [
        (
            ConvGeom {
                cin: 16,
                din: 9,
                hin: 9,
                win: 6,
                up: 0,
                k: 3,
                stride: 1,
                pad: 1,
                cout: 17,
            },
            vec![(0, 3), (3, 4), (4, 9)],
        ),
        (
            ConvGeom {
                cin: 16,
                din: 4,
                hin: 5,
                win: 4,
                up: 1,
                k: 3,
                stride: 1,
                pad: 1,
                cout: 16,
            },
            vec![(0, 2), (2, 5), (5, 8)],
        ),
    ] {
        let case = Case::new(g, 7);
        let o = g.out_dims();
        let plane = o[1] * o[2];
        let kernel = crate::gemm::selected();
        let whole = case.run(kernel, 2, true, 0, o[0], 0, g.din, 0);
        let direct = case.run(kernel, 2, false, 0, o[0], 0, g.din, 0);
        assert_close(&format!("{g:?}"), &whole, &direct);
        for (od0, od1) in slabs {
            let (z0, z1) = input_window(&g, od0, od1);
            let part = case.run(kernel, 2, true, od0, od1, z0, z1, 0);
            for c in 0..g.cout {
                let w = &whole[(c * o[0] + od0) * plane..(c * o[0] + od1) * plane];
                let p = &part[c * (od1 - od0) * plane..(c + 1) * (od1 - od0) * plane];
                assert_eq!(p, w, "{g:?} slab {od0}..{od1} channel {c}");
            }
        }
    }
}

#[test]
fn the_rule_keeps_small_and_narrow_convolutions_direct() {
    let base = ConvGeom {
        cin: 64,
        din: 8,
        hin: 12,
        win: 12,
        up: 0,
        k: 3,
        stride: 1,
        pad: 1,
        cout: 64,
    };
    assert!(applies(&base));
    assert!(!applies(&ConvGeom { cout: 1, ..base }));
    assert!(!applies(&ConvGeom { cin: 8, ..base }));
    assert!(applies(&ConvGeom {
        din: 8,
        hin: 8,
        win: 4,
        ..base
    }));
    assert!(!applies(&ConvGeom {
        din: 4,
        hin: 6,
        win: 6,
        ..base
    }));
    assert!(!applies(&ConvGeom {
        din: 2,
        hin: 3,
        win: 3,
        ..base
    }));
    assert!(!applies(&ConvGeom { stride: 2, ..base }));
    assert!(!applies(&ConvGeom {
        k: 1,
        pad: 0,
        ..base
    }));
}
