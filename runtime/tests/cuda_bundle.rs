//! Bundle-scale GPU checks (ignored by default: 210 M random parameters, about 1 GB of host
//! memory): a random bundle-layout blob for `brats-ldm bench --device cuda` on a machine without
//! Rust, and 50 DDIM steps at the bundle's latent [8,36,44,28] with device memory read before
//! and after. Run with
//! `cargo test --release -p ldm-runtime --features cuda --test cuda_bundle -- --ignored --nocapture`
//! (`scripts/gpu-check.sh` runs the built binary on the GPU machine).
#![cfg(feature = "cuda")]

use std::time::Instant;

use ldm_runtime::cuda::{CudaError, CudaRuntime};
use ldm_runtime::{Device, Options, Precision, Sampler, WeightStore};
use ldm_weights::{expected_tensors, write_blob_file, Blob, DType, ModelConfig, TensorData};

/// The bundle's decoder and UNet (no encoder: generation never uses it) at latent [8,36,44,28].
fn bundle_config() -> ModelConfig {
    let mut cfg = ModelConfig::bundle();
    cfg.encoder = None;
    cfg.latent_shape = [8, 36, 44, 28];
    cfg
}

/// Writes a blob with the bundle's tensors (random, seed 1, the runtime's `WeightStore::random`
/// scaling) to the path in `LDM_BUNDLE_BLOB`, then opens it again and checks every tensor.
#[test]
#[ignore = "writes a 0.84 GB blob to $LDM_BUNDLE_BLOB"]
fn write_random_bundle_blob() {
    let Some(path) = std::env::var_os("LDM_BUNDLE_BLOB") else {
        println!("skipping: set LDM_BUNDLE_BLOB to the blob path to write");
        return;
    };
    let cfg = bundle_config();
    let t0 = Instant::now();
    let store = WeightStore::random(&cfg, 1).unwrap();
    let specs = expected_tensors(&cfg);
    let tensors: Vec<TensorData> = specs
        .iter()
        .map(|s| {
            TensorData::from_f32(
                &s.name,
                s.shape.clone(),
                store.get(&s.name, &s.shape).unwrap(),
                DType::F32,
            )
        })
        .collect();
    write_blob_file(&path, &cfg, &tensors).unwrap();
    let blob = Blob::open(&path).unwrap();
    assert_eq!(blob.config(), &cfg);
    assert_eq!(blob.tensors().len(), specs.len());
    let params: usize = specs
        .iter()
        .map(|s| s.shape.iter().product::<usize>())
        .sum();
    println!(
        "wrote {} tensors, {params} parameters, to {} in {:.1} s",
        specs.len(),
        std::path::Path::new(&path).display(),
        t0.elapsed().as_secs_f64()
    );
}

/// 50 DDIM steps plus decode at the bundle's size: free device memory before and after a whole
/// generation must be equal (one arena, allocated in `new`; the step graph is replayed).
#[test]
#[ignore = "bundle scale: needs a GPU with about 5 GB free"]
fn fifty_bundle_steps_leave_device_memory_unchanged() {
    let cfg = bundle_config();
    let store = WeightStore::random(&cfg, 1).unwrap();
    for precision in [Precision::F32, Precision::Bf16] {
        let opts = Options {
            device: Device::Cuda(0),
            precision,
            sampler: Some(Sampler::Ddim { eta: 0.0 }),
            steps: Some(50),
            ..Options::default()
        };
        let t0 = Instant::now();
        let mut gpu = match CudaRuntime::new(&cfg, &store, &opts) {
            Ok(r) => r,
            Err(e @ CudaError::DeviceUnavailable { .. }) => {
                println!("skipping: {e}");
                return;
            }
            Err(e) => panic!("CUDA runtime failed on a machine with a GPU: {e}"),
        };
        println!(
            "{precision:?}: runtime ready in {:.2} s, plan {:?}",
            t0.elapsed().as_secs_f64(),
            gpu.report()
        );
        let vol: usize = gpu.output_shape().iter().product();
        let mut out = vec![0f32; vol];
        gpu.generate(1, &mut out).unwrap();
        let free_before = gpu.device().memory_info().unwrap().0;
        let t1 = Instant::now();
        gpu.generate(2, &mut out).unwrap();
        let secs = t1.elapsed().as_secs_f64();
        let free_after = gpu.device().memory_info().unwrap().0;
        let finite = out.iter().all(|v| v.is_finite());
        println!(
            "{precision:?}: 50 steps + decode in {secs:.3} s; free device memory {free_before} -> {free_after}; output finite: {finite}"
        );
        assert_eq!(
            free_before, free_after,
            "device memory changed over 50 steps"
        );
        assert!(finite, "non-finite output at the bundle size");
    }
}
