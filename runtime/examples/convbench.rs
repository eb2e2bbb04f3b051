//! Times single convolutions of typical decoder/UNet shapes:
//! `cargo run --release -p ldm-runtime --example convbench -- [threads] [reps]` (best and median
//! of `reps` runs per shape; on a shared machine the best approximates a quiet moment).
//! `CONVBENCH_ONLY=<substring>` keeps the shapes whose name contains it; `CONVBENCH_SPIN=1` also
//! times a pure-compute spin loop on 1 and 2 threads (shows whether the second core is free).
//! Shapes that `conv::winograd::applies` to are also timed as Winograd F(2x2x2, 3x3x3)
//! (`CONVBENCH_WINOGRAD_ONLY=1`: only those).
use ldm_runtime::conv::{conv, pack_len, winograd, ConvCall, ConvGeom, ConvInput, ConvScratch, Init, OutWindow, PackWs};
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
    let threads: usize = std::env::args().nth(1).and_then(|v| v.parse().ok()).unwrap_or(2);
    let reps: usize = std::env::args().nth(2).and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let pool = Pool::new(threads).unwrap();
    let shapes = [
        ("dec L0 64->64 48x48x32", ConvGeom { cin: 64, din: 48, hin: 48, win: 32, up: 0, k: 3, stride: 1, pad: 1, cout: 64 }),
        ("dec up 128 ->48x48x32", ConvGeom { cin: 128, din: 24, hin: 24, win: 16, up: 1, k: 3, stride: 1, pad: 1, cout: 128 }),
        ("unet L0 256->256 12x12x8", ConvGeom { cin: 256, din: 12, hin: 12, win: 8, up: 0, k: 3, stride: 1, pad: 1, cout: 256 }),
        ("small 16->16 8x8x4", ConvGeom { cin: 16, din: 8, hin: 8, win: 4, up: 0, k: 3, stride: 1, pad: 1, cout: 16 }),
        ("small 32->32 6x8x4", ConvGeom { cin: 32, din: 6, hin: 8, win: 4, up: 0, k: 3, stride: 1, pad: 1, cout: 32 }),
        ("small 64->64 6x8x4", ConvGeom { cin: 64, din: 6, hin: 8, win: 4, up: 0, k: 3, stride: 1, pad: 1, cout: 64 }),
        ("unet 256->256 8x8x4", ConvGeom { cin: 256, din: 8, hin: 8, win: 4, up: 0, k: 3, stride: 1, pad: 1, cout: 256 }),
        ("unet 256->256 8x8x6", ConvGeom { cin: 256, din: 8, hin: 8, win: 6, up: 0, k: 3, stride: 1, pad: 1, cout: 256 }),
        ("unet L1 256->256 6x6x4", ConvGeom { cin: 256, din: 6, hin: 6, win: 4, up: 0, k: 3, stride: 1, pad: 1, cout: 256 }),
        ("unet L1 512->256 6x6x4", ConvGeom { cin: 512, din: 6, hin: 6, win: 4, up: 0, k: 3, stride: 1, pad: 1, cout: 256 }),
        ("unet L2 512->512 3x3x2", ConvGeom { cin: 512, din: 3, hin: 3, win: 2, up: 0, k: 3, stride: 1, pad: 1, cout: 512 }),
    ];
    for th in [1usize, 2].into_iter().filter(|_| std::env::var("CONVBENCH_SPIN").is_ok()) {
        let p = Pool::new(th).unwrap();
        let t = Instant::now();
        p.for_each(8, &|_, _| { std::hint::black_box(spin(20_000_000)); });
        println!("spin with {th} threads: {:.3} s", t.elapsed().as_secs_f64());
    }
    let only = std::env::var("CONVBENCH_ONLY").unwrap_or_default();
    for (name, g) in shapes {
        if !name.contains(only.as_str()) {
            continue;
        }
        let x = vec![0.5f32; g.cin * g.din * g.hin * g.win];
        let w = vec![0.01f32; g.cout * g.kdim()];
        let b = vec![0f32; g.cout];
        let pa = PackedA::pack(&w, g.cout, g.kdim());
        let o = g.out_dims();
        let mut y = vec![0f32; g.cout * o[0] * o[1] * o[2]];
        let mut ws = vec![0f32; threads * pack_len()];
        let mut sh = vec![0f32; ldm_runtime::conv::shared_pack_len(&g)];
        let input = ConvInput { data: &x, z0: 0, planes: g.din };
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps * usize::from(std::env::var_os("CONVBENCH_WINOGRAD_ONLY").is_none()) {
            let t = Instant::now();
            let call = ConvCall { g: &g, bias: &b, input: &input, od0: 0, od1: o[0], win: OutWindow { z0: 0, planes: o[0] }, init: Init::Bias };
            conv(&pool, &call, &pa, &mut y, ConvScratch { pack: PackWs(ws.as_mut_ptr(), ws.len()), shared: PackWs(sh.as_mut_ptr(), sh.len()) });
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        if let (Some(&best), Some(&median)) = (times.first(), times.get(times.len() / 2)) {
            println!("{name}: best {:.1} ms ({:.1} GFLOP/s), median {:.1} ms", best * 1e3, g.flops() / best / 1e9, median * 1e3);
        }
        if winograd::applies(&g) {
            let u = winograd::WinogradWeights::new(&w, g.cout, g.cin, g.up);
            let mut wws = vec![0f32; threads * winograd::thread_ws_len(&g)];
            let mut times = Vec::with_capacity(reps);
            for _ in 0..reps {
                let t = Instant::now();
                let call = ConvCall { g: &g, bias: &b, input: &input, od0: 0, od1: o[0], win: OutWindow { z0: 0, planes: o[0] }, init: Init::Bias };
                winograd::conv(&pool, &call, &u, &mut y, PackWs(wws.as_mut_ptr(), wws.len()));
                times.push(t.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            let (best, median) = (times[0], times[times.len() / 2]);
            println!("{name} winograd: best {:.1} ms ({:.1} direct-equivalent GFLOP/s), median {:.1} ms", best * 1e3, g.flops() / best / 1e9, median * 1e3);
        }
    }
}

#[allow(dead_code)]
fn spin(n: usize) -> f32 {
    let mut a = [1.0f32; 16];
    for i in 0..n {
        for l in 0..16 {
            a[l] = a[l] * 0.999_999 + (i as f32) * 1e-9;
        }
    }
    a.iter().sum()
}
