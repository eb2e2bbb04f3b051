//! `brats-ldm bench`: latency of one sampling step (UNet forward, min/median/max over K timed
//! steps after W warm-up steps), the decode time, the runtime's planned memory, peak RSS, and
//! throughput in GFLOP/s from the runtime's FLOP counts. Human-readable table or `--json`.

use crate::cmd::generate::{open_model, parse_latent_shape, plan_and_allocate, resolve_model};
use crate::cmd::memory;
use anyhow::{bail, Context};
use ldm_runtime::arguments::{self, check_latent_shape, device_name, Spelling};
use ldm_runtime::Options;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
#[command(about = "Measure latency per sampling step, decode time, memory and GFLOP/s")]
pub struct Args {
    /// Model blob (default: as for `generate`).
    #[arg(long, value_name = "BLOB")]
    pub model: Option<PathBuf>,
    /// cpu, cuda or cuda:N (CUDA needs a build with `--features cuda` and an NVIDIA GPU).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Timed sampling steps.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Untimed warm-up steps before them.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Latent shape C,D,H,W (default: the model's).
    #[arg(long, value_name = "C,D,H,W")]
    pub latent_shape: Option<String>,
    /// Worker threads (default: all available cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Skip the decode measurement (it costs about three sampling steps at the bundle's size).
    #[arg(long)]
    pub no_decode: bool,
    /// Bound in bytes for the arena, workspaces and sampler state (weights excluded), e.g. 2GiB:
    /// the CPU decoder then works in depth slabs to fit.
    #[arg(long, value_name = "BYTES")]
    pub max_memory: Option<String>,
    /// Print one JSON object instead of a table (the plan line still goes to stderr).
    #[arg(long)]
    pub json: bool,
}

/// Summary statistics of a series of durations, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Stats {
    /// None for an empty series.
    pub fn of(samples: &[f64]) -> Option<Stats> {
        let mut s: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if s.is_empty() {
            return None;
        }
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            0.5 * (s[n / 2 - 1] + s[n / 2])
        };
        Some(Stats {
            min: s[0],
            median,
            max: s[n - 1],
        })
    }
}

#[derive(Debug, Serialize)]
struct Report {
    model: String,
    model_checksum: String,
    device: String,
    /// The CPU's model name (`/proc/cpuinfo`), for every figure's record.
    cpu_model: Option<String>,
    /// The CPU microkernel the runtime chose (`LDM_CPU_KERNEL` forces one); None on a GPU.
    cpu_kernel: Option<&'static str>,
    threads: Option<usize>,
    latent_shape: [usize; 4],
    output_shape: [usize; 4],
    warmup_steps: usize,
    timed_steps: usize,
    step_seconds: Stats,
    step_gflop: f64,
    step_gflops_per_s: f64,
    decode_seconds: Option<f64>,
    decode_gflop: f64,
    decode_gflops_per_s: Option<f64>,
    plan_bytes: u64,
    plan_weights_bytes: u64,
    plan_arena_bytes: u64,
    plan_workspace_bytes: u64,
    plan_threads: usize,
    peak_rss_bytes: Option<u64>,
}

/// The CPU's model name from `/proc/cpuinfo` (x86 `model name`; Arm has none there), None
/// where unavailable.
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// Peak resident set size of this process (Linux `VmHWM`), None where unavailable.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut parts = line["VmHWM:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => value.checked_mul(1024),
        Some(_) => None,
    }
}

/// A cheap deterministic fill in [-1, 1) for benchmark inputs (timing does not depend on it).
fn fill(buf: &mut [f32], mut state: u64) {
    for v in buf.iter_mut() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *v = ((state >> 40) as f32) / ((1u64 << 23) as f32) - 1.0;
    }
}

fn human_bytes(b: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    if b as f64 >= GIB {
        format!("{:.2} GiB", b as f64 / GIB)
    } else {
        format!("{:.1} MiB", b as f64 / MIB)
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = arguments::parse_device(&args.device, Spelling::Cli)?;
    let precision = arguments::parse_precision(&args.precision, Spelling::Cli)?;
    let latent_arg = args
        .latent_shape
        .as_deref()
        .map(parse_latent_shape)
        .transpose()?;
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    if args.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    let max_memory = args
        .max_memory
        .as_deref()
        .map(memory::parse_max_memory)
        .transpose()?;
    let model_path = resolve_model(args.model.as_deref())?;
    let blob = open_model(&model_path)?;
    let cfg = blob.config();
    let latent_shape = latent_arg.unwrap_or(cfg.latent_shape.map(|n| n as usize));
    check_latent_shape(cfg, latent_shape)?;
    let options = Options {
        device,
        precision,
        batch: 1,
        latent_shape: Some(latent_shape),
        steps: None,
        sampler: None,
        threads: args.threads,
        max_memory,
    };
    let mut rt = plan_and_allocate(&blob, options, &model_path, true)?;
    let plan = rt.plan().clone();
    let out_shape = rt.output_shape();
    let timesteps: Vec<u32> = rt.timesteps().to_vec();
    let mut x = memory::try_zeroed(latent_shape.iter().product(), "latent")?;
    let mut eps = memory::try_zeroed(x.len(), "epsilon")?;
    fill(&mut x, 42);

    let mut samples = Vec::with_capacity(args.steps);
    for i in 0..args.warmup + args.steps {
        let t = timesteps
            .get(i % timesteps.len().max(1))
            .copied()
            .unwrap_or(500);
        let started = Instant::now();
        rt.unet_forward(&x, t, &mut eps)
            .context("UNet forward failed")?;
        let elapsed = started.elapsed().as_secs_f64();
        if i >= args.warmup {
            samples.push(elapsed);
        }
    }
    let step = Stats::of(&samples).context("no step was timed")?;

    let decode_seconds = if args.no_decode {
        None
    } else {
        let mut image = memory::try_zeroed(out_shape.iter().product(), "output volume")?;
        let started = Instant::now();
        rt.decode(&x, &mut image).context("decode failed")?;
        Some(started.elapsed().as_secs_f64())
    };
    let step_gflop = rt.flops_per_unet_step() / 1e9;
    let decode_gflop = rt.flops_per_decode() / 1e9;
    let report = Report {
        model: model_path.display().to_string(),
        model_checksum: format!("{:016x}", blob.checksum()),
        device: device_name(rt.device()),
        cpu_model: cpu_model(),
        cpu_kernel: (plan.threads > 0).then(|| ldm_runtime::gemm::selected().name()),
        threads: args.threads,
        latent_shape,
        output_shape: out_shape,
        warmup_steps: args.warmup,
        timed_steps: args.steps,
        step_seconds: step,
        step_gflop,
        step_gflops_per_s: step_gflop / step.median,
        decode_seconds,
        decode_gflop,
        decode_gflops_per_s: decode_seconds.map(|s| decode_gflop / s),
        plan_bytes: plan.total_bytes as u64,
        plan_weights_bytes: plan.weights_bytes as u64,
        plan_arena_bytes: plan.arena_bytes as u64,
        plan_workspace_bytes: plan.workspace_bytes as u64,
        plan_threads: plan.threads,
        peak_rss_bytes: peak_rss_bytes(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &Report) {
    let shape = |s: [usize; 4]| format!("{}x{}x{}x{}", s[0], s[1], s[2], s[3]);
    println!("model           {} ({})", r.model, r.model_checksum);
    if r.plan_threads == 0 {
        // The CUDA backend: no host worker pool, and the plan below is device memory.
        println!(
            "device          {} (GPU; plan bytes are device memory)",
            r.device
        );
    } else {
        println!("device          {}, {} threads", r.device, r.plan_threads);
        println!(
            "cpu             {}, microkernel {}",
            r.cpu_model.as_deref().unwrap_or("unknown model"),
            r.cpu_kernel.unwrap_or("-")
        );
    }
    println!(
        "latent -> image {} -> {}",
        shape(r.latent_shape),
        shape(r.output_shape)
    );
    println!(
        "sampling step   min {:.4} s  median {:.4} s  max {:.4} s  ({} timed after {} warm-up)",
        r.step_seconds.min,
        r.step_seconds.median,
        r.step_seconds.max,
        r.timed_steps,
        r.warmup_steps
    );
    println!(
        "                {:.3} GFLOP per step, {:.1} GFLOP/s at the median",
        r.step_gflop, r.step_gflops_per_s
    );
    match (r.decode_seconds, r.decode_gflops_per_s) {
        (Some(s), Some(g)) => println!(
            "decode          {s:.4} s, {:.3} GFLOP, {g:.1} GFLOP/s",
            r.decode_gflop
        ),
        _ => println!("decode          not measured (--no-decode)"),
    }
    println!(
        "plan            {} (weights {}, activation arena {}, workspaces {})",
        human_bytes(r.plan_bytes),
        human_bytes(r.plan_weights_bytes),
        human_bytes(r.plan_arena_bytes),
        human_bytes(r.plan_workspace_bytes)
    );
    match r.peak_rss_bytes {
        Some(b) => println!("peak RSS        {}", human_bytes(b)),
        None => println!("peak RSS        unavailable on this platform"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_odd_even_and_empty_series() {
        assert_eq!(
            Stats::of(&[3.0, 1.0, 2.0]),
            Some(Stats {
                min: 1.0,
                median: 2.0,
                max: 3.0
            })
        );
        assert_eq!(
            Stats::of(&[4.0, 1.0, 2.0, 3.0]),
            Some(Stats {
                min: 1.0,
                median: 2.5,
                max: 4.0
            })
        );
        assert_eq!(Stats::of(&[]), None);
        assert_eq!(Stats::of(&[f64::NAN]), None);
    }

    #[test]
    fn reads_vm_hwm() {
        let status = "Name:\tx\nVmPeak:\t  100 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(2048 * 1024));
        assert_eq!(parse_vm_hwm("VmRSS: 5 kB\n"), None);
        assert_eq!(parse_vm_hwm("VmHWM: lots kB\n"), None);
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes().unwrap() > 1 << 20);
        }
    }

    #[test]
    fn fill_is_deterministic_and_bounded() {
        let (mut a, mut b) = (vec![0f32; 1000], vec![0f32; 1000]);
        fill(&mut a, 7);
        fill(&mut b, 7);
        assert_eq!(a, b);
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
        assert!(a.iter().any(|v| *v < -0.5) && a.iter().any(|v| *v > 0.5));
        assert_eq!(human_bytes(3 << 30), "3.00 GiB");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
    }
}
