//! Times each microkernel this CPU runs in isolation (L1-resident packed panels, one thread):
//! `cargo run --release -p ldm-runtime --example kernelbench -- [reps]` prints the best and median
//! GFLOP/s of `reps` runs of full MR x NR tiles with KC-deep panels.
use ldm_runtime::gemm::{microkernel, with_tile, Kernel, Tile, KC, MR};
use std::time::Instant;

fn bench<T: Tile>(t: T, reps: usize) -> (f64, f64) {
    let nr = T::NR;
    let a: Vec<f32> = (0..KC * MR).map(|i| (i % 7) as f32 * 0.01).collect();
    let b: Vec<f32> = (0..KC * nr).map(|i| (i % 5) as f32 * 0.01).collect();
    let mut c = vec![0f32; MR * nr];
    let calls = 20_000;
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            for _ in 0..calls {
                microkernel(t, KC, MR, std::hint::black_box(&a), &b, &mut c, nr, nr);
            }
            t0.elapsed().as_secs_f64()
        })
        .collect();
    std::hint::black_box(&c);
    times.sort_by(f64::total_cmp);
    let flops = 2.0 * (MR * nr * KC * calls) as f64;
    (flops / times[0] / 1e9, flops / times[reps / 2] / 1e9)
}

fn main() {
    let reps: usize = std::env::args().nth(1).and_then(|v| v.parse().ok()).unwrap_or(15).max(1);
    for k in Kernel::ALL.into_iter().filter(|k| k.available()) {
        let (best, median) = with_tile!(k, t => bench(t, reps));
        println!("{:<9} {}x{}: best {best:.1} GFLOP/s, median {median:.1} GFLOP/s", k.name(), MR, k.nr());
    }
}
