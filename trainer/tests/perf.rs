//! Timings of the CPU training hot paths (ignored by default; run with
//! `cargo test -p ldm-trainer --release --test perf -- --ignored --nocapture`).

mod common;

use std::time::Instant;

use common::Rng;
use ldm_trainer::layers::conv3d::Conv3d;
use ldm_trainer::layers::Dims;
use ldm_trainer::params::ParamStore;

fn time<F: FnMut()>(mut f: F, reps: usize) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() / reps as f64
}

#[test]
#[ignore]
fn conv3d_throughput() {
    for &(cin, cout, s, k, stride) in &[(32usize, 32usize, 32usize, 3usize, 1usize), (64, 64, 24, 3, 1), (16, 16, 64, 3, 1), (1, 16, 64, 3, 1), (32, 32, 32, 3, 2)] {
        let mut store = ParamStore::new();
        let mut conv = Conv3d::new(&mut store, "c", cin, cout, k, stride, 1, true).unwrap();
        let p = Rng(1).vec(store.len(), 0.1);
        let xd = Dims::new(1, cin, s, s, s);
        let x = Rng(2).vec(xd.numel(), 1.0);
        let (y, yd) = conv.forward(&p, &x, xd).unwrap();
        let flops = 2.0 * (cin * k * k * k * cout * yd.spatial()) as f64;
        let tf = time(|| drop(conv.forward(&p, &x, xd).unwrap()), 3);
        let mut g = vec![0.0f32; p.len()];
        let tb = time(|| drop(conv.backward(&p, &mut g, &x, xd, &y).unwrap()), 3);
        conv.input_grad = false;
        let tw = time(|| drop(conv.backward(&p, &mut g, &x, xd, &y).unwrap()), 3);
        println!(
            "conv {cin}->{cout} k{k} s{stride} at {s}^3: forward {:.1} ms ({:.1} GFLOP/s), backward {:.1} ms ({:.1} GFLOP/s; weight grad alone {:.1} ms)",
            tf * 1e3,
            flops / tf / 1e9,
            tb * 1e3,
            2.0 * flops / tb / 1e9,
            tw * 1e3
        );
    }
}
