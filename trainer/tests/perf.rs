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

/// One VAE-GAN and one diffusion training step at a small CPU configuration.
#[test]
#[ignore]
fn small_cpu_training_steps() {
    use ldm_trainer::models::discriminator::DiscriminatorConfig;
    use ldm_trainer::optim::{AdamConfig, MultiStepLr};
    use ldm_trainer::train::diffusion::{DiffusionConfig, DiffusionTrainer};
    use ldm_trainer::train::vae_gan::{VaeGanConfig, VaeGanTrainer};
    use ldm_weights::{DecoderConfig, EncoderConfig, SchedulerConfig, UnetConfig};
    let ch = vec![16, 32, 64];
    let cfg = VaeGanConfig {
        encoder: EncoderConfig { in_channels: 1, num_channels: ch.clone(), num_res_blocks: vec![1; 3], latent_channels: 4, norm_num_groups: 8, norm_eps: 1e-6 },
        decoder: DecoderConfig { latent_channels: 4, num_channels: ch, num_res_blocks: vec![1; 3], out_channels: 1, norm_num_groups: 8, norm_eps: 1e-6 },
        discriminator: DiscriminatorConfig { in_channels: 1, num_channels: 16, num_layers_d: 3, out_channels: 1 },
        kl_weight: 1e-7,
        adv_weight: 0.1,
        perceptual_weight: 0.0,
        adv_start_step: 0,
        d_train_steps: 1,
        adam_g: AdamConfig::default(),
        adam_d: AdamConfig::default(),
        lr_g: MultiStepLr::constant(1e-4),
        lr_d: MultiStepLr::constant(1e-4),
    };
    let mut t = VaeGanTrainer::new(cfg, 1).unwrap();
    let dims = Dims::new(1, 1, 64, 64, 48);
    let img = Rng(3).vec(dims.numel(), 0.5).iter().map(|v| v + 0.5).collect::<Vec<f32>>();
    let s = time(|| drop(t.train_step(&img, dims).unwrap()), 2);
    println!("VAE-GAN step, channels [16,32,64], 1 res block, image 64x64x48, disc 16ch: {:.2} s ({} + {} parameters)", s, t.ae_params.len(), t.disc_params.len());

    let ucfg = DiffusionConfig {
        unet: UnetConfig {
            in_channels: 4,
            out_channels: 4,
            num_channels: vec![32, 64, 64],
            attention_levels: vec![false, true, true],
            num_head_channels: vec![0, 32, 32],
            num_res_blocks: vec![1; 3],
            norm_num_groups: 8,
            norm_eps: 1e-6,
            attention_output_projection: false,
        },
        scheduler: SchedulerConfig::bundle(),
        adam: AdamConfig::default(),
        lr: MultiStepLr::constant(1e-4),
        scale_factor: 1.0,
        ema_decay: None,
    };
    let mut d = DiffusionTrainer::new(ucfg, 2).unwrap();
    let ld = Dims::new(2, 4, 16, 16, 12);
    let lat = Rng(4).vec(ld.numel(), 1.0);
    let s = time(|| drop(d.train_step(&lat, ld).unwrap()), 2);
    println!("diffusion step, UNet [32,64,64] attn [F,T,T], 1 res block, batch 2 x 4x16x16x12: {:.2} s ({} parameters)", s, d.params.len());
}

/// Building (registering + initialising) the bundle-size trainers.
#[test]
#[ignore]
fn bundle_trainers_build() {
    use ldm_trainer::train::diffusion::{DiffusionConfig, DiffusionTrainer};
    use ldm_trainer::train::vae_gan::{VaeGanConfig, VaeGanTrainer};
    let t = Instant::now();
    let v = VaeGanTrainer::new(VaeGanConfig::bundle(), 0).unwrap();
    println!("bundle VAE-GAN: {} + {} parameters, built in {:.2} s", v.ae_params.len(), v.disc_params.len(), t.elapsed().as_secs_f64());
    let t = Instant::now();
    let d = DiffusionTrainer::new(DiffusionConfig::bundle(1.0), 0).unwrap();
    println!("bundle UNet: {} parameters, built in {:.2} s", d.params.len(), t.elapsed().as_secs_f64());
}
