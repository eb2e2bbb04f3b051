//! Times one UNet step and one decode of the bundle configuration with random weights, and
//! prints the plan and peak RSS. Usage:
//! `cargo run --release -p ldm-runtime --example bundle -- [D H W] [--plan-only] [--unet-only] [--threads N] [--reps N] [--max-memory-mib M]`
//! (latent spatial size, default 12 12 8; the bundle's own is 36 44 28).

use ldm_runtime::{Options, Runtime, WeightStore};
use ldm_weights::{DecoderConfig, ModelConfig, OutputGeometry, Provenance, SchedulerConfig, UnetConfig};
use std::time::Instant;

fn peak_rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let nums: Vec<usize> = args.iter().take_while(|a| !a.starts_with("--")).filter_map(|a| a.parse().ok()).collect();
    let flag = |name: &str| args.iter().position(|a| a == name);
    let value = |name: &str| flag(name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse::<usize>().ok());
    let plan_only = flag("--plan-only").is_some();
    let skip_decode = flag("--unet-only").is_some();
    let reps = value("--reps").unwrap_or(3);
    let sp = if nums.len() == 3 { [nums[0], nums[1], nums[2]] } else { [12, 12, 8] };
    let latent = [8, sp[0], sp[1], sp[2]];
    let cfg = ModelConfig {
        decoder: Some(DecoderConfig::bundle()),
        encoder: None,
        unet: Some(UnetConfig::bundle()),
        scheduler: SchedulerConfig::bundle(),
        scale_factor: 1.0,
        latent_shape: latent.map(|v| v as u32),
        geometry: OutputGeometry::bundle(),
        provenance: Provenance::default(),
    };
    let store = WeightStore::random(&cfg, 1).expect("random weights");
    let max_memory = value("--max-memory-mib").map(|m| m << 20);
    let opts = Options { latent_shape: Some(latent), threads: value("--threads"), max_memory, ..Options::default() };
    let mut rt = Runtime::from_store(&cfg, &store, opts).expect("runtime");
    drop(store);
    let p = rt.plan().clone();
    let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
    println!("latent {latent:?} -> output {:?}, threads {}, microkernel {}", rt.output_shape(), p.threads, ldm_runtime::gemm::selected());
    println!(
        "plan: weights {:.3} GiB, arena {:.3} GiB (unet {:.3} GiB of {:.3} unshared, decoder {:.3} GiB of {:.3} unshared), workspace {:.3} GiB, state {:.4} GiB, total {:.3} GiB",
        gib(p.weights_bytes),
        gib(p.arena_bytes),
        gib(p.unet_arena_bytes),
        gib(p.unet_unshared_bytes),
        gib(p.decoder_arena_bytes),
        gib(p.decoder_unshared_bytes),
        gib(p.workspace_bytes),
        gib(p.state_bytes),
        gib(p.total_bytes)
    );
    if p.decoder_slabs > 0 {
        println!("slab decode: {} slabs of {} output planes, {} passes", p.decoder_slabs, p.decoder_slab_planes, p.decoder_passes);
    }
    println!("flops: unet step {:.1} GFLOP, decode {:.1} GFLOP", rt.flops_per_unet_step() / 1e9, rt.flops_per_decode() / 1e9);
    if plan_only {
        println!("peak RSS {:.0} MiB", peak_rss_mib());
        return;
    }
    let n: usize = latent.iter().product();
    let mut x = vec![0f32; n];
    ldm_runtime::philox_normal(9, 0, &mut x);
    let mut eps = vec![0f32; n];
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        rt.unet_forward(&x, 500, &mut eps).expect("unet");
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("unet step: best {:.3} s, {:.1} GFLOP/s", best, rt.flops_per_unet_step() / best / 1e9);
    if skip_decode {
        return;
    }
    let mut out = vec![0f32; rt.output_shape().iter().product()];
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        rt.decode(&x, &mut out).expect("decode");
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("decode: best {:.3} s, {:.1} GFLOP/s", best, rt.flops_per_decode() / best / 1e9);
    println!("peak RSS {:.0} MiB", peak_rss_mib());
}
