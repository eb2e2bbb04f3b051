//! The shipped default model (weights/default/brats-ldm-default.blob) is what
//! weights/default/TRAINING.md says: made by `brats-ldm train` with the cpu-small recipe, at the
//! preset's geometry and latent shape, and it generates a finite volume in the training
//! intensity range in a few seconds.

use std::path::Path;

use ldm_runtime::{Options, Runtime};
use ldm_trainer::train::setup::TrainConfig;
use ldm_weights::Blob;

#[test]
fn shipped_default_model_matches_its_recipe_and_generates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/default/brats-ldm-default.blob");
    let blob = Blob::open(&path).unwrap();
    let c = blob.config();
    let preset = TrainConfig::cpu_small();
    assert_eq!(c.decoder.as_ref(), Some(&preset.autoencoder.trainer.decoder));
    assert_eq!(c.unet.as_ref(), Some(&preset.diffusion.unet));
    assert_eq!(c.scheduler, preset.diffusion.scheduler);
    let lat = preset.latent_spatial();
    assert_eq!(c.latent_shape, [4, lat[0] as u32, lat[1] as u32, lat[2] as u32]);
    assert_eq!(c.geometry.spacing_mm, preset.data.spacing_mm.map(|s| s as f32));
    assert_eq!(c.geometry.orientation, "RAS");
    assert!(c.provenance.producer.starts_with("brats-ldm ") && c.provenance.producer.ends_with(" train"));
    assert_eq!(c.provenance.steps, preset.autoencoder.steps + preset.diffusion.steps);
    assert!(c.scale_factor.is_finite() && c.scale_factor > 0.0);

    let mut rt = Runtime::new(&blob, Options { threads: Some(2), ..Default::default() }).unwrap();
    let n: usize = preset.data.roi.iter().product();
    let mut out = vec![0.0f32; n];
    rt.generate(1, &mut out, &mut |_| {}).unwrap();
    assert!(out.iter().all(|v| v.is_finite()));
    let mean = out.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    assert!((0.02..0.8).contains(&mean), "mean intensity {mean} is outside the training range");
}
