//! Bundle-scale GPU checks (ignored by default: 210 M random parameters, about 1 GB of host
//! memory): a random bundle-layout blob for `brats-ldm bench --device cuda` on a machine without
//! Rust, and 50 DDIM steps at the bundle's latent [8,36,44,28] with device memory read before
//! and after. Run with
//! `cargo test --release -p ldm-runtime --features cuda --test cuda_bundle -- --ignored --nocapture`
//! (`scripts/gpu-check.sh` runs the built binary on the GPU machine).
#![cfg(feature = "cuda")]

use std::time::Instant;

use ldm_runtime::cuda::{CudaError, CudaRuntime};
use ldm_test_support::rel_l2;
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


/// At the bundle's size, per precision: one UNet forward and one decode (bf16/f16 within 2e-2
/// of the GPU's fp32, itself checked against the CPU on the fixtures), then 50 DDIM steps plus
/// decode twice, with free device memory equal before and after the second generation (one
/// arena, allocated in `new`; the step graph is replayed).
#[test]
#[ignore = "bundle scale: needs a GPU with about 6 GB free"]
fn fifty_bundle_steps_leave_device_memory_unchanged() {
    let cfg = bundle_config();
    let store = WeightStore::random(&cfg, 1).unwrap();
    let n: usize = cfg.latent_shape.iter().map(|&v| v as usize).product();
    let mut x = vec![0f32; n];
    ldm_runtime::philox_normal(3, 0, &mut x);
    let mut reference: Option<(Vec<f32>, Vec<f32>)> = None;
    for precision in [Precision::F32, Precision::Bf16, Precision::F16] {
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
        let mut eps = vec![0f32; n];
        let mut image = vec![0f32; vol];
        gpu.unet_forward(&x, 500, &mut eps).unwrap();
        gpu.decode(&x, &mut image).unwrap();
        match &reference {
            None => reference = Some((eps, image)),
            Some((eps32, image32)) => {
                let (e_unet, e_dec) = (rel_l2(&eps, eps32), rel_l2(&image, image32));
                println!("{precision:?} vs GPU fp32 at the bundle size: UNet forward relative L2 {e_unet:.2e}, decode {e_dec:.2e}");
                assert!(
                    e_unet < 2e-2 && e_dec < 2e-2,
                    "{precision:?}: {e_unet} {e_dec}"
                );
            }
        }
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
