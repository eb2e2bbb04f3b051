//! Parity with MONAI Generative 0.2.3 (fixtures in tests/fixtures/monai): decoder, UNet at three
//! timesteps, the training schedule, DDPM steps, and both DDIM pipelines, run through blobs
//! written by the weights crate from the fixture checkpoints.

mod common;

use common::*;
use ldm_runtime::sampler::{ddpm_update, plan};
use ldm_runtime::schedule::Schedule;
use ldm_runtime::{Options, Progress, Runtime, Sampler};
use ldm_weights::SchedulerConfig;

fn opts(latent: [usize; 4], steps: usize) -> Options {
    Options { latent_shape: Some(latent), steps: Some(steps), sampler: Some(Sampler::Ddim { eta: 0.0 }), ..Options::default() }
}

#[test]
fn decoder_matches_monai() {
    let (zs, z) = npy("autoencoder/decode_z.npy");
    let (is, want) = npy("autoencoder/decode_image.npy");
    let latent = [zs[1], zs[2], zs[3], zs[4]];
    let cfg = config(true, false, 1.0, latent.map(|v| v as u32));
    let mut rt = Runtime::new(&fixture_blob(&cfg), opts(latent, 50)).unwrap();
    assert_eq!(rt.output_shape(), [is[1], is[2], is[3], is[4]]);
    let mut out = vec![0f32; want.len()];
    rt.decode(&z, &mut out).unwrap();
    let e = rel_l2(&out, &want);
    println!("decode rel L2 {e:.3e}");
    assert!(e < 1e-5, "decode rel L2 {e}");
}

#[test]
fn unet_matches_monai_at_three_timesteps() {
    let (xs, x) = npy("unet/x.npy");
    let latent = [xs[1], xs[2], xs[3], xs[4]];
    let cfg = config(false, true, 1.0, latent.map(|v| v as u32));
    let mut rt = Runtime::new(&fixture_blob(&cfg), opts(latent, 50)).unwrap();
    for t in [0u32, 500, 999] {
        let (_, want) = npy(&format!("unet/eps_t{t}.npy"));
        let mut eps = vec![0f32; want.len()];
        rt.unet_forward(&x, t, &mut eps).unwrap();
        let e = rel_l2(&eps, &want);
        println!("unet t={t} rel L2 {e:.3e}");
        assert!(e < 1e-5, "unet t={t} rel L2 {e}");
    }
}

#[test]
fn schedule_and_ddpm_steps_match_monai() {
    let cfg = SchedulerConfig::bundle();
    let s = Schedule::new(&cfg).unwrap();
    let ddpm = plan(&cfg, &s, Sampler::Ddpm, 1000).unwrap();
    assert!(ddpm.clip, "the fixture's DDPMScheduler clamps (MONAI's default)");
    let (_, ac) = npy("scheduler/alphas_cumprod.npy");
    let e = rel_l2(&s.alphas_cumprod, &ac);
    let worst = s.alphas_cumprod.iter().zip(&ac).map(|(a, b)| ((a - b) / b).abs()).fold(0f32, f32::max);
    println!("alphas_cumprod rel L2 {e:.3e}, worst element {worst:.3e}");
    assert!(worst < 1e-6, "alphas_cumprod worst relative error {worst}");
    for t in [999u32, 500, 1, 0] {
        let (_, mut x) = npy(&format!("scheduler/ddpm_x_t{t}.npy"));
        let (_, eps) = npy(&format!("scheduler/ddpm_eps_t{t}.npy"));
        let (_, noise) = npy(&format!("scheduler/ddpm_noise_t{t}.npy"));
        let (_, want) = npy(&format!("scheduler/ddpm_xprev_t{t}.npy"));
        let k = 999 - t as usize;
        assert_eq!(ddpm.timesteps[k], t);
        ddpm_update(ddpm.row(k), ddpm.prediction, ddpm.clip, &mut x, &eps, &noise);
        let e = rel_l2(&x, &want);
        println!("ddpm t={t} rel L2 {e:.3e}");
        assert!(e < 1e-5, "ddpm t={t} rel L2 {e}");
    }
}

fn pipeline_runtime(scale: f32, steps: usize) -> (Runtime, Vec<f32>) {
    let (ns, noise) = npy("pipeline/noise.npy");
    let latent = [ns[1], ns[2], ns[3], ns[4]];
    let cfg = config(true, true, scale, latent.map(|v| v as u32));
    (Runtime::new(&fixture_blob(&cfg), opts(latent, steps)).unwrap(), noise)
}

#[test]
fn bundle_sampler_pipeline_matches_monai() {
    let (mut rt, noise) = pipeline_runtime(1.0, 50);
    assert_eq!(rt.timesteps()[..3], [980, 960, 940]);
    let mut lat = vec![0f32; noise.len()];
    for (k, file) in [(1usize, "pipeline/bundle_latent_after_1_steps.npy"), (10, "pipeline/bundle_latent_after_10_steps.npy"), (50, "pipeline/bundle_final_latent.npy")] {
        rt.sample_latent(&noise, 0, Some(k), &mut lat).unwrap();
        let (_, want) = npy(file);
        let e = rel_l2(&lat, &want);
        println!("bundle latent after {k} steps rel L2 {e:.3e}");
        assert!(e < if k == 1 { 1e-5 } else { 1e-4 }, "latent after {k} steps rel L2 {e}");
    }
    let (_, want) = npy("pipeline/bundle_image.npy");
    let mut out = vec![0f32; want.len()];
    let mut steps = 0;
    rt.generate_from_noise(&noise, &mut out, &mut |p| {
        if let Progress::Step { .. } = p {
            steps += 1
        }
    })
    .unwrap();
    assert_eq!(steps, 50);
    let e = rel_l2(&out, &want);
    println!("bundle pipeline image rel L2 {e:.3e}");
    assert!(e < 1e-4, "bundle image rel L2 {e}");
}

#[test]
fn inferer_pipeline_with_scale_factor_matches_monai() {
    let (mut rt, noise) = pipeline_runtime(0.8, 10);
    let (_, want) = npy("pipeline/inferer_image.npy");
    let mut out = vec![0f32; want.len()];
    rt.generate_from_noise(&noise, &mut out, &mut |_| {}).unwrap();
    let e = rel_l2(&out, &want);
    println!("inferer pipeline image rel L2 {e:.3e}");
    assert!(e < 1e-4, "inferer image rel L2 {e}");
}
