//! Option validation and error paths: unsupported device/precision, sampler settings, buffer
//! sizes and missing networks all give typed errors, never panics.

mod common;

use common::*;
use ldm_runtime::{Device, Options, Precision, Runtime, RuntimeError, Sampler};

fn blob(decoder: bool, unet: bool) -> ldm_weights::Blob {
    fixture_blob(&config(decoder, unet, 1.0, [8, 8, 8, 4]))
}

#[test]
fn invalid_options_are_typed_errors() {
    let b = blob(true, true);
    let err = |o: Options| Runtime::new(&b, o).err().expect("must fail");
    assert!(matches!(err(Options { device: Device::Cuda(0), ..Options::default() }), RuntimeError::DeviceUnavailable(_)));
    assert!(matches!(err(Options { precision: Precision::F16, ..Options::default() }), RuntimeError::UnsupportedPrecision(_)));
    assert!(matches!(err(Options { precision: Precision::Bf16, ..Options::default() }), RuntimeError::UnsupportedPrecision(_)));
    assert!(matches!(err(Options { batch: 0, ..Options::default() }), RuntimeError::InvalidOption(_)));
    assert!(matches!(err(Options { threads: Some(0), ..Options::default() }), RuntimeError::InvalidOption(_)));
    assert!(matches!(err(Options { steps: Some(0), ..Options::default() }), RuntimeError::InvalidOption(_)));
    assert!(matches!(err(Options { steps: Some(1001), ..Options::default() }), RuntimeError::InvalidOption(_)));
    assert!(matches!(err(Options { sampler: Some(Sampler::Ddim { eta: -1.0 }), ..Options::default() }), RuntimeError::InvalidOption(_)));
    assert!(matches!(err(Options { sampler: Some(Sampler::Ddim { eta: f32::NAN }), ..Options::default() }), RuntimeError::InvalidOption(_)));
    assert!(matches!(err(Options { sampler: Some(Sampler::Ddpm), steps: Some(1001), ..Options::default() }), RuntimeError::InvalidOption(_)));
    assert!(matches!(err(Options { sampler: Some(Sampler::Pndm), steps: Some(3), ..Options::default() }), RuntimeError::InvalidOption(_)));
    // Latent not divisible by 2^(levels-1), or with the wrong channel count.
    assert!(matches!(err(Options { latent_shape: Some([8, 6, 8, 4]), ..Options::default() }), RuntimeError::InvalidOption(_)));
    assert!(matches!(err(Options { latent_shape: Some([4, 8, 8, 4]), ..Options::default() }), RuntimeError::InvalidOption(_)));
    assert!(matches!(err(Options { latent_shape: Some([8, 0, 8, 4]), ..Options::default() }), RuntimeError::InvalidOption(_)));
}

#[test]
fn samplers_have_the_expected_timesteps() {
    let b = blob(false, true);
    let rt = Runtime::new(&b, Options { sampler: Some(Sampler::Ddpm), ..Options::default() }).unwrap();
    assert_eq!(rt.timesteps().len(), 1000);
    assert_eq!((rt.timesteps()[0], rt.timesteps()[999]), (999, 0));
    let rt = Runtime::new(&b, Options { steps: Some(30), ..Options::default() }).unwrap();
    assert_eq!(rt.timesteps().len(), 30);
    assert_eq!((rt.timesteps()[0], rt.timesteps()[1], rt.timesteps()[29]), (957, 924, 0));
    let rt = Runtime::new(&b, Options::default()).unwrap();
    assert_eq!(rt.timesteps().len(), 50, "blob default: DDIM 50");
    // MONAI's DDPM with fewer steps: the DDIM grid, each step to t - 1.
    let rt = Runtime::new(&b, Options { sampler: Some(Sampler::Ddpm), steps: Some(7), ..Options::default() }).unwrap();
    assert_eq!(rt.timesteps(), &[852, 710, 568, 426, 284, 142, 0]);
    // PNDM: 12 Runge-Kutta timesteps, then the grid without its three largest points.
    let rt = Runtime::new(&b, Options { sampler: Some(Sampler::Pndm), steps: Some(10), ..Options::default() }).unwrap();
    assert_eq!(rt.timesteps().len(), 19);
    assert_eq!(&rt.timesteps()[..4], &[900, 850, 850, 800]);
}

#[test]
fn wrong_buffers_and_missing_networks_are_typed_errors() {
    let mut unet_only = Runtime::new(&blob(false, true), Options::default()).unwrap();
    let n = 8 * 8 * 8 * 4;
    let x = vec![0f32; n];
    let mut eps = vec![0f32; n];
    assert!(matches!(unet_only.unet_forward(&x[..n - 1], 0, &mut eps), Err(RuntimeError::BufferSize { .. })));
    assert!(matches!(unet_only.unet_forward(&x, 0, &mut eps[..3]), Err(RuntimeError::BufferSize { .. })));
    assert!(matches!(unet_only.decode(&x, &mut eps), Err(RuntimeError::MissingNetwork("decoder"))));
    assert!(matches!(unet_only.generate(1, &mut eps, &mut |_| {}), Err(RuntimeError::MissingNetwork(_))));
    let mut full = Runtime::new(&blob(true, true), Options { batch: 2, steps: Some(2), ..Options::default() }).unwrap();
    let vol: usize = full.output_shape().iter().product();
    let mut out = vec![0f32; vol];
    assert!(matches!(full.generate(1, &mut out, &mut |_| {}), Err(RuntimeError::BufferSize { .. })), "batch 2 needs two volumes");
    let mut out = vec![0f32; 2 * vol];
    assert!(matches!(full.generate_from_noise(&x, &mut out, &mut |_| {}), Err(RuntimeError::BufferSize { .. })), "batch 2 needs two latents");
    let mut dec_only = Runtime::new(&blob(true, false), Options::default()).unwrap();
    assert!(matches!(dec_only.unet_forward(&x, 0, &mut eps), Err(RuntimeError::MissingNetwork("unet"))));
}

#[test]
fn same_seed_same_volume_other_seed_other_volume() {
    let b = blob(true, true);
    let mut rt = Runtime::new(&b, Options { steps: Some(3), sampler: Some(Sampler::Ddim { eta: 1.0 }), ..Options::default() }).unwrap();
    let vol: usize = rt.output_shape().iter().product();
    let (mut a, mut c, mut d) = (vec![0f32; vol], vec![0f32; vol], vec![0f32; vol]);
    rt.generate(11, &mut a, &mut |_| {}).unwrap();
    rt.generate(11, &mut c, &mut |_| {}).unwrap();
    rt.generate(12, &mut d, &mut |_| {}).unwrap();
    assert_eq!(a, c);
    assert_ne!(a, d);
    assert!(a.iter().all(|v| v.is_finite()));
}

#[test]
fn half_precision_blobs_load_and_decode_close_to_monai() {
    let (zs, z) = npy("autoencoder/decode_z.npy");
    let (_, want) = npy("autoencoder/decode_image.npy");
    let latent = [zs[1], zs[2], zs[3], zs[4]];
    let cfg = config(true, false, 1.0, latent.map(|v| v as u32));
    for dtype in [ldm_weights::DType::F16, ldm_weights::DType::BF16] {
        let mut rt = Runtime::new(&fixture_blob_dtype(&cfg, dtype), Options { latent_shape: Some(latent), ..Options::default() }).unwrap();
        let mut out = vec![0f32; want.len()];
        rt.decode(&z, &mut out).unwrap();
        let e = rel_l2(&out, &want);
        println!("{dtype:?} weights: decode rel L2 {e:.2e}");
        assert!(e < 3e-2, "{dtype:?}: {e}");
    }
}
