//! Optimiser, checkpoint and training-step tests: Adam against hand-computed updates,
//! MultiStepLR, checkpoint round trip and corruption detection, a short VAE-GAN and diffusion
//! run that lowers the loss, and kill/resume giving bit-identical weights.

mod common;

use std::time::Instant;

use common::{tiny_diffusion_config, tiny_vae_config, Rng};
use ldm_trainer::checkpoint::{self, CheckpointError, CheckpointHeader, SectionInfo};
use ldm_trainer::layers::Dims;
use ldm_trainer::optim::{Adam, AdamConfig, MultiStepLr};
use ldm_trainer::train::diffusion::{scale_factor, DiffusionConfig, DiffusionTrainer};
use ldm_trainer::train::vae_gan::VaeGanTrainer;

#[test]
fn adam_matches_hand_computed_updates() {
    let cfg = AdamConfig { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
    let mut opt = Adam::new(cfg, 2);
    let mut p = vec![1.0f32, -2.0];
    // Step 1: bias-corrected m = g, v = g^2, so the update is lr * sign(g).
    assert!(opt.step(&mut p, &[0.5, -4.0], 0.1));
    assert!((p[0] - 0.9).abs() < 1e-6 && (p[1] + 1.9).abs() < 1e-6, "{p:?}");
    // Step 2 with g = (1, 0): m = (0.19, -0.36), v = (0.00125, 0.015984)
    assert!(opt.step(&mut p, &[1.0, 0.0], 0.1));
    let m0 = 0.9 * 0.05 + 0.1 * 1.0;
    let v0 = 0.999 * 0.001 * 0.25 + 0.001 * 1.0;
    let (bc1, bc2) = (1.0 - 0.9f64 * 0.9, 1.0 - 0.999f64 * 0.999);
    let want0 = 0.9 - 0.1 * (m0 / bc1) / ((v0 / bc2).sqrt() + 1e-8);
    assert!((p[0] as f64 - want0).abs() < 1e-6, "{} vs {want0}", p[0]);
    assert_eq!(opt.t, 2);
    assert!(!opt.step(&mut p, &[1.0], 0.1), "length mismatch is refused");
}

#[test]
fn multistep_lr() {
    let s = MultiStepLr { base: 1e-3, milestones: vec![10, 20], gamma: 0.1 };
    assert_eq!(s.lr_at(0), 1e-3);
    assert_eq!(s.lr_at(9), 1e-3);
    assert!((s.lr_at(10) - 1e-4).abs() < 1e-10);
    assert!((s.lr_at(25) - 1e-5).abs() < 1e-11);
}

#[test]
fn checkpoint_round_trip_and_corruption() {
    let dir = std::env::temp_dir().join(format!("ldm-ckpt-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a.ckpt");
    let a = vec![1.0f32, 2.0, 3.0];
    let b = vec![-1.5f32];
    let header = CheckpointHeader {
        kind: "test".into(),
        step: 7,
        seed: 3,
        config: serde_json::json!({"x": 1}),
        tensors: serde_json::json!([]),
        adam_steps: vec![7],
        extra: serde_json::json!({"cursor": 5}),
        sections: vec![SectionInfo { name: "a".into(), len: 3 }, SectionInfo { name: "b".into(), len: 1 }],
    };
    checkpoint::save(&path, &header, &[&a, &b]).unwrap();
    let (h, s) = checkpoint::load(&path).unwrap();
    assert_eq!(h, header);
    assert_eq!(s, vec![a.clone(), b.clone()]);
    // No temp file left behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    // Mismatched section table is refused before writing.
    assert!(checkpoint::save(&dir.join("b.ckpt"), &header, &[&a]).is_err());
    let bytes = std::fs::read(&path).unwrap();
    let mut flipped = bytes.clone();
    let mid = flipped.len() - 12;
    flipped[mid] ^= 1;
    std::fs::write(dir.join("f.ckpt"), &flipped).unwrap();
    assert!(matches!(checkpoint::load(&dir.join("f.ckpt")), Err(CheckpointError::Checksum { .. })));
    std::fs::write(dir.join("t.ckpt"), &bytes[..bytes.len() - 5]).unwrap();
    assert!(checkpoint::load(&dir.join("t.ckpt")).is_err());
    std::fs::write(dir.join("m.ckpt"), b"not a checkpoint at all, just text").unwrap();
    assert!(matches!(checkpoint::load(&dir.join("m.ckpt")), Err(CheckpointError::Magic { .. })));
    assert!(matches!(checkpoint::load(&dir.join("missing.ckpt")), Err(CheckpointError::Io { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A bright ellipsoid "brain" with a brighter off-centre "lesion", jittered per seed.
fn phantom(seed: u64, s: usize) -> Vec<f32> {
    let mut rng = Rng(seed);
    let (cx, cy, cz) = (0.5 + 0.05 * rng.uniform(), 0.5 + 0.05 * rng.uniform(), 0.5 + 0.05 * rng.uniform());
    let (lx, ly, lz) = (cx + 0.15 * rng.uniform(), cy + 0.15 * rng.uniform(), cz + 0.1 * rng.uniform());
    let mut v = vec![0.0f32; s * s * s];
    for d in 0..s {
        for h in 0..s {
            for w in 0..s {
                let (x, y, z) = ((d as f32 + 0.5) / s as f32, (h as f32 + 0.5) / s as f32, (w as f32 + 0.5) / s as f32);
                let r = ((x - cx) / 0.4).powi(2) + ((y - cy) / 0.35).powi(2) + ((z - cz) / 0.3).powi(2);
                let l = (x - lx).powi(2) + (y - ly).powi(2) + (z - lz).powi(2);
                let mut val = if r < 1.0 { 0.5 + 0.1 * (1.0 - r) } else { 0.0 };
                if l < 0.01 && r < 1.0 {
                    val = 0.95;
                }
                v[(d * s + h) * s + w] = val;
            }
        }
    }
    v
}

#[test]
fn vae_gan_training_lowers_loss_and_resumes_bit_exactly() {
    let s = 16;
    let dims = Dims::new(1, 1, s, s, s);
    let images: Vec<Vec<f32>> = (0..4).map(|i| phantom(i, s)).collect();
    let start = Instant::now();
    let mut t = VaeGanTrainer::new(tiny_vae_config(), 42).unwrap();
    let mut l1 = Vec::new();
    for step in 0..30 {
        let log = t.train_step(&images[step % 4], dims).unwrap();
        assert_eq!(log.gen_adv.is_some(), step >= 2);
        assert_eq!(log.disc.is_some(), step >= 2);
        l1.push(log.l1);
    }
    // Two discriminator updates per adversarial step (steps 2..30), one generator update per step.
    assert_eq!(t.opt_d.t, 2 * 28);
    assert_eq!(t.opt_g.t, 30);
    let first: f32 = l1[..4].iter().sum::<f32>() / 4.0;
    let last: f32 = l1[26..].iter().sum::<f32>() / 4.0;
    println!("VAE-GAN 30 steps at 16^3: {:.2}s, L1 {first:.4} -> {last:.4}", start.elapsed().as_secs_f64());
    assert!(last < 0.6 * first, "L1 did not drop: {first} -> {last}");

    // Kill/resume: 6 straight steps vs 3 steps + checkpoint + resume + 3 steps.
    let dir = std::env::temp_dir().join(format!("ldm-vae-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut a = VaeGanTrainer::new(tiny_vae_config(), 7).unwrap();
    for step in 0..6 {
        a.train_step(&images[step % 4], dims).unwrap();
    }
    let mut b = VaeGanTrainer::new(tiny_vae_config(), 7).unwrap();
    for step in 0..3 {
        b.train_step(&images[step % 4], dims).unwrap();
    }
    let ck = dir.join("vae.ckpt");
    b.save(&ck, serde_json::json!({"cursor": 3})).unwrap();
    drop(b);
    let (mut c, extra) = VaeGanTrainer::resume(&ck).unwrap();
    assert_eq!(extra["cursor"], 3);
    assert_eq!(c.step, 3);
    for step in 3..6 {
        c.train_step(&images[step % 4], dims).unwrap();
    }
    assert!(a.ae_params.data.iter().zip(&c.ae_params.data).all(|(x, y)| x.to_bits() == y.to_bits()), "autoencoder weights differ");
    assert!(a.disc_params.data.iter().zip(&c.disc_params.data).all(|(x, y)| x.to_bits() == y.to_bits()), "discriminator weights differ");
    assert_eq!(a.opt_g, c.opt_g);
    assert_eq!(a.opt_d, c.opt_d);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn vae_gan_rejects_bad_input() {
    let mut t = VaeGanTrainer::new(tiny_vae_config(), 1).unwrap();
    assert!(t.train_step(&[0.0; 10], Dims::new(1, 1, 3, 3, 3)).is_err());
    let mut img = phantom(0, 8);
    img[5] = f32::NAN;
    assert!(t.train_step(&img, Dims::new(1, 1, 8, 8, 8)).is_err());
    assert_eq!(t.step, 0, "a refused step does not count");
}

#[test]
fn diffusion_training_lowers_loss_and_resumes_bit_exactly() {
    let dims = Dims::new(2, 4, 8, 8, 8);
    // Structured latents: smooth per-channel patterns (learnable), unit-ish scale.
    let lat: Vec<f32> = (0..dims.numel())
        .map(|i| {
            let (w, h, d, c) = (i % 8, (i / 8) % 8, (i / 64) % 8, (i / 512) % 4);
            ((w as f32 * 0.7 + c as f32).sin() + (h as f32 * 0.5).cos() * (d as f32 * 0.3 + 1.0).sin()) * 0.8
        })
        .collect();
    let sf = scale_factor(&lat).unwrap();
    assert!(sf > 0.5 && sf < 3.0);
    let lat: Vec<f32> = lat.iter().map(|v| v * sf).collect();
    let start = Instant::now();
    let mut t = DiffusionTrainer::new(tiny_diffusion_config(), 5).unwrap();
    let mut losses = Vec::new();
    for _ in 0..60 {
        losses.push(t.train_step(&lat, dims).unwrap().loss);
    }
    let first: f32 = losses[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = losses[50..].iter().sum::<f32>() / 10.0;
    println!("diffusion 60 steps at 2x4x8^3: {:.2}s, loss {first:.4} -> {last:.4}", start.elapsed().as_secs_f64());
    assert!(last < 0.8 * first, "loss did not drop: {first} -> {last}");

    let dir = std::env::temp_dir().join(format!("ldm-diff-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut a = DiffusionTrainer::new(tiny_diffusion_config(), 9).unwrap();
    for _ in 0..4 {
        a.train_step(&lat, dims).unwrap();
    }
    let mut b = DiffusionTrainer::new(tiny_diffusion_config(), 9).unwrap();
    for _ in 0..2 {
        b.train_step(&lat, dims).unwrap();
    }
    let ck = dir.join("unet.ckpt");
    b.save(&ck, serde_json::Value::Null).unwrap();
    let (mut c, _) = DiffusionTrainer::resume(&ck).unwrap();
    for _ in 0..2 {
        c.train_step(&lat, dims).unwrap();
    }
    assert!(a.params.data.iter().zip(&c.params.data).all(|(x, y)| x.to_bits() == y.to_bits()), "weights differ after resume");
    assert_eq!(a.opt, c.opt);
    // A VAE checkpoint is not a diffusion checkpoint.
    let vae = VaeGanTrainer::new(tiny_vae_config(), 1).unwrap();
    vae.save(&dir.join("vae.ckpt"), serde_json::Value::Null).unwrap();
    assert!(DiffusionTrainer::resume(&dir.join("vae.ckpt")).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn diffusion_ema_averages_the_iterates_and_survives_resume() {
    let dims = Dims::new(1, 4, 8, 8, 8);
    let lat = Rng(11).vec(dims.numel(), 1.0);
    let cfg = DiffusionConfig { ema_decay: Some(0.9), ..tiny_diffusion_config() };
    let mut t = DiffusionTrainer::new(cfg.clone(), 3).unwrap();
    let mut expect = t.params.data.clone();
    for k in 0..5u64 {
        t.train_step(&lat, dims).unwrap();
        // Warm-up decay after the (k+1)-th update: min(0.9, (1 + (k+1)) / (10 + (k+1))).
        let d = (0.9f64).min((2.0 + k as f64) / (11.0 + k as f64)) as f32;
        expect.iter_mut().zip(&t.params.data).for_each(|(e, &p)| *e = d * *e + (1.0 - d) * p);
    }
    let ema = t.ema.clone().unwrap();
    assert!(ema.iter().zip(&expect).all(|(a, b)| a.to_bits() == b.to_bits()), "EMA differs from its definition");
    assert!(ema.iter().zip(&t.params.data).any(|(a, b)| a != b), "EMA equals the last iterate");
    assert_eq!(t.inference_params().data, ema, "export samples with the average");

    // Resume continues the average bit-exactly; a checkpoint without its EMA section is refused.
    let dir = std::env::temp_dir().join(format!("ldm-diff-ema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = dir.join("unet.ckpt");
    t.save(&ck, serde_json::Value::Null).unwrap();
    let (mut r, _) = DiffusionTrainer::resume(&ck).unwrap();
    t.train_step(&lat, dims).unwrap();
    r.train_step(&lat, dims).unwrap();
    assert_eq!(t.ema, r.ema);
    let plain = DiffusionTrainer::new(tiny_diffusion_config(), 3).unwrap();
    assert!(plain.ema.is_none());
    assert_eq!(plain.inference_params().data, plain.params.data);
    let mut no_ema = plain;
    no_ema.config.ema_decay = Some(0.9);
    no_ema.save(&ck, serde_json::Value::Null).unwrap();
    let err = DiffusionTrainer::resume(&ck).err().expect("a checkpoint that lacks its EMA loads");
    assert!(err.to_string().contains("EMA"), "{err}");
    assert!(DiffusionTrainer::new(DiffusionConfig { ema_decay: Some(1.0), ..tiny_diffusion_config() }, 1).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn models_refuse_short_parameter_buffers() {
    use ldm_trainer::models::unet::DiffusionUnet;
    use ldm_trainer::params::ParamStore;
    let cfg = tiny_diffusion_config();
    let mut store = ParamStore::new();
    let unet = DiffusionUnet::new(&mut store, &cfg.unet).unwrap();
    let xd = Dims::new(1, 4, 4, 4, 4);
    let x = vec![0.1f32; xd.numel()];
    assert!(unet.forward(&store.data[..10], &x, xd, &[3.0], false).is_err());
    assert!(unet.forward(&store.data, &x[..5], xd, &[3.0], false).is_err());
    assert!(unet.forward(&store.data, &x, xd, &[3.0, 4.0], false).is_err());
    assert!(unet.forward(&store.data, &x, Dims::new(1, 4, 3, 4, 4), &[3.0], false).is_err());
    let fw = unet.forward(&store.data, &x, xd, &[3.0], true).unwrap();
    let mut short = vec![0.0f32; 3];
    assert!(unet.backward(&store.data, &mut short, &fw, &fw.eps).is_err());
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let s = 16;
    let dims = Dims::new(1, 1, s, s, s);
    let images: Vec<Vec<f32>> = (0..2).map(|i| phantom(i, s)).collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut t = VaeGanTrainer::new(tiny_vae_config(), 3).unwrap();
            for step in 0..4 {
                t.train_step(&images[step % 2], dims).unwrap();
            }
            let mut d = DiffusionTrainer::new(tiny_diffusion_config(), 4).unwrap();
            let ld = Dims::new(2, 4, 8, 8, 8);
            let lat: Vec<f32> = (0..ld.numel()).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
            for _ in 0..2 {
                d.train_step(&lat, ld).unwrap();
            }
            (t.ae_params.data, t.disc_params.data, d.params.data)
        })
    };
    let one = run(1);
    let three = run(3);
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    assert!(same(&one.0, &three.0), "autoencoder weights depend on the thread count");
    assert!(same(&one.1, &three.1), "discriminator weights depend on the thread count");
    assert!(same(&one.2, &three.2), "unet weights depend on the thread count");
}
