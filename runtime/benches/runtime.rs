//! criterion benchmarks: one UNet step and one decode, (a) at the bundle's widths with latent
//! [8, 12, 12, 8] (decode -> [1, 48, 48, 32]; 72.8 and 238.7 GFLOP), (b) at the tiny fixture
//! configuration. Random weights. Run: `cargo bench -p ldm-runtime --bench runtime`.
//! PyTorch side by side: `benches/pytorch_reference.py` at the repository root.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ldm_runtime::{philox_normal, Options, Runtime, WeightStore};
use ldm_weights::{DecoderConfig, ModelConfig, OutputGeometry, Provenance, SchedulerConfig, UnetConfig};
use std::time::Duration;

fn config(decoder: DecoderConfig, unet: UnetConfig, latent: [usize; 4]) -> ModelConfig {
    ModelConfig {
        decoder: Some(decoder),
        encoder: None,
        unet: Some(unet),
        scheduler: SchedulerConfig::bundle(),
        scale_factor: 1.0,
        latent_shape: latent.map(|v| v as u32),
        geometry: OutputGeometry::bundle(),
        provenance: Provenance::default(),
    }
}

/// The MONAI fixture networks (tests/fixtures/monai/{autoencoder,unet}/case.json).
fn tiny() -> (DecoderConfig, UnetConfig) {
    (ldm_test_support::fixture_decoder(), ldm_test_support::fixture_unet())
}

fn bench_model(c: &mut Criterion, name: &str, cfg: ModelConfig, latent: [usize; 4]) {
    let store = WeightStore::random(&cfg, 1).expect("random weights");
    let opts = Options { latent_shape: Some(latent), threads: Some(2), ..Options::default() };
    let mut rt = Runtime::from_store(&cfg, &store, opts).expect("runtime");
    drop(store);
    let n: usize = latent.iter().product();
    let mut x = vec![0f32; n];
    philox_normal(5, 0, &mut x);
    let mut eps = vec![0f32; n];
    let mut out = vec![0f32; rt.output_shape().iter().product()];
    let mut g = c.benchmark_group(name);
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(rt.flops_per_unet_step() as u64));
    g.bench_function("unet_step", |b| b.iter(|| rt.unet_forward(&x, 500, &mut eps).expect("unet")));
    g.throughput(Throughput::Elements(rt.flops_per_decode() as u64));
    g.bench_function("decode", |b| b.iter(|| rt.decode(&x, &mut out).expect("decode")));
    g.finish();
}

fn benches(c: &mut Criterion) {
    let (td, tu) = tiny();
    bench_model(c, "tiny_8x8x4", config(td, tu, [8, 8, 8, 4]), [8, 8, 8, 4]);
    bench_model(c, "bundle_widths_12x12x8", config(DecoderConfig::bundle(), UnetConfig::bundle(), [8, 12, 12, 8]), [8, 12, 12, 8]);
}

criterion_group!(runtime_benches, benches);
criterion_main!(runtime_benches);
