//! Measures our packed GEMM (the selected microkernel, see `LDM_CPU_KERNEL`) (a 1x1 convolution is exactly `C[M,N] = W[M,K] X[K,N]`)
//! against the `matrixmultiply` crate on conv-like shapes, single-threaded:
//! `cargo run --release -p ldm-runtime --example gemm_compare`.
use ldm_runtime::conv::{conv, pack_len, shared_pack_len, ConvCall, ConvGeom, ConvInput, ConvScratch, Init, OutWindow, PackWs};
use ldm_runtime::gemm::{init, PackedA};
use ldm_runtime::pool::Pool;
use std::time::Instant;

fn main() {
    let kernel = match init() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    eprintln!("microkernel {kernel}");
    let pool = Pool::new(1).expect("pool");
    for (m, k, n) in [(64usize, 1728usize, 8192usize), (256, 6912, 1152), (512, 13824, 144)] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.01).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.1).collect();
        let flops = 2.0 * (m * k * n) as f64;
        // Ours: a 1x1 convolution over a [k, 1, 1, n] volume.
        let g = ConvGeom { cin: k, din: 1, hin: 1, win: n, up: 0, k: 1, stride: 1, pad: 0, cout: m };
        let pa = PackedA::pack(&a, m, k);
        let bias = vec![0f32; m];
        let mut c = vec![0f32; m * n];
        let mut ws = vec![0f32; pack_len()];
        let mut sh = vec![0f32; shared_pack_len(&g)];
        let input = ConvInput { data: &b, z0: 0, planes: 1 };
        let mut ours = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let call = ConvCall { g: &g, bias: &bias, input: &input, od0: 0, od1: 1, win: OutWindow { z0: 0, planes: 1 }, init: Init::Bias };
            conv(&pool, &call, &pa, &mut c, ConvScratch { pack: PackWs(ws.as_mut_ptr(), ws.len()), shared: PackWs(sh.as_mut_ptr(), sh.len()) });
            ours = ours.min(t.elapsed().as_secs_f64());
        }
        let mut c2 = vec![0f32; m * n];
        let mut theirs = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            // SAFETY: row-major m x k, k x n, m x n buffers of the right sizes.
            unsafe {
                matrixmultiply::sgemm(m, k, n, 1.0, a.as_ptr(), k as isize, 1, b.as_ptr(), n as isize, 1, 0.0, c2.as_mut_ptr(), n as isize, 1);
            }
            theirs = theirs.min(t.elapsed().as_secs_f64());
        }
        let diff = c.iter().zip(&c2).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())).fold(0f32, f32::max);
        println!(
            "M={m} K={k} N={n}: ours {:.1} GFLOP/s, matrixmultiply {:.1} GFLOP/s (max rel diff {diff:.1e})",
            flops / ours / 1e9,
            flops / theirs / 1e9
        );
    }
}
