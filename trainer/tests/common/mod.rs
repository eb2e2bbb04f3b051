//! Test helpers: a seeded RNG and finite-difference gradient checks (the MONAI fixture readers
//! live in ldm-test-support).
#![allow(dead_code)]

pub use ldm_test_support::rel_l2;

use ldm_trainer::models::discriminator::DiscriminatorConfig;
use ldm_trainer::optim::{AdamConfig, MultiStepLr};
use ldm_trainer::train::diffusion::DiffusionConfig;
use ldm_trainer::train::vae_gan::VaeGanConfig;
use ldm_weights::{DecoderConfig, EncoderConfig, SchedulerConfig, UnetConfig};

/// SplitMix64: deterministic test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }
    pub fn index(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// Finite-difference check of a layer. `f(p, x)` is the forward, `b(p, g, x, dy)` the backward
/// returning dx and accumulating parameter gradients into g. The scalar checked is
/// `L = sum(y * r)` for a fixed random r. Samples up to `samples` coordinates of x and of p and
/// returns the worst relative L2 error (analytic vs central differences) of the two.
pub fn gradcheck<F, B>(p: &[f32], x: &[f32], f: F, b: B, samples: usize, seed: u64) -> (f64, f64)
where
    F: Fn(&[f32], &[f32]) -> Vec<f32>,
    B: Fn(&[f32], &mut [f32], &[f32], &[f32]) -> Vec<f32>,
{
    let mut rng = Rng(seed);
    let y = f(p, x);
    let r = rng.vec(y.len(), 1.0);
    let mut g = vec![0.0f32; p.len()];
    let dx = b(p, &mut g, x, &r);
    assert_eq!(dx.len(), x.len());
    let eps = 1e-2f32;
    let mut check = |which: usize, n: usize| -> f64 {
        if n == 0 {
            return 0.0;
        }
        let (mut ana, mut num) = (Vec::new(), Vec::new());
        let idx: Vec<usize> = if n <= samples {
            (0..n).collect()
        } else {
            (0..samples).map(|_| rng.index(n)).collect()
        };
        for i in idx {
            let (mut pp, mut xx) = (p.to_vec(), x.to_vec());
            let v = if which == 0 { &mut xx } else { &mut pp };
            let orig = v[i];
            v[i] = orig + eps;
            let lp = dot(&f(&pp, &xx), &r);
            let v = if which == 0 { &mut xx } else { &mut pp };
            v[i] = orig - eps;
            let lm = dot(&f(&pp, &xx), &r);
            num.push(((lp - lm) / (2.0 * eps as f64)) as f32);
            ana.push(if which == 0 { dx[i] } else { g[i] });
        }
        rel_l2(&ana, &num)
    };
    let ex = check(0, x.len());
    let ep = check(1, p.len());
    (ex, ep)
}

/// A tiny VAE-GAN: 8/16 channels, 4 latent channels, adversarial terms from step 2.
pub fn tiny_vae_config() -> VaeGanConfig {
    let enc = EncoderConfig {
        in_channels: 1,
        num_channels: vec![8, 16],
        num_res_blocks: vec![1, 1],
        latent_channels: 4,
        norm_num_groups: 4,
        norm_eps: 1e-6,
    };
    let dec = DecoderConfig {
        latent_channels: 4,
        num_channels: vec![8, 16],
        num_res_blocks: vec![1, 1],
        out_channels: 1,
        norm_num_groups: 4,
        norm_eps: 1e-6,
    };
    VaeGanConfig {
        encoder: enc,
        decoder: dec,
        discriminator: DiscriminatorConfig {
            in_channels: 1,
            num_channels: 4,
            num_layers_d: 2,
            out_channels: 1,
        },
        kl_weight: 1e-6,
        adv_weight: 0.1,
        perceptual_weight: 0.0,
        adv_start_step: 2,
        d_train_steps: 2,
        adam_g: AdamConfig {
            lr: 1e-3,
            ..AdamConfig::default()
        },
        adam_d: AdamConfig {
            lr: 1e-3,
            ..AdamConfig::default()
        },
        lr_g: MultiStepLr::constant(1e-3),
        lr_d: MultiStepLr::constant(1e-3),
    }
}

/// A tiny UNet (8/16 channels, attention at the deeper level) on 4-channel latents.
pub fn tiny_diffusion_config() -> DiffusionConfig {
    DiffusionConfig {
        unet: UnetConfig {
            in_channels: 4,
            out_channels: 4,
            num_channels: vec![8, 16],
            attention_levels: vec![false, true],
            num_head_channels: vec![0, 8],
            num_res_blocks: vec![1, 1],
            norm_num_groups: 4,
            norm_eps: 1e-6,
            attention_output_projection: false,
        },
        scheduler: SchedulerConfig::bundle(),
        adam: AdamConfig {
            lr: 2e-3,
            ..AdamConfig::default()
        },
        lr: MultiStepLr {
            base: 2e-3,
            milestones: vec![1000],
            gamma: 0.1,
        },
        scale_factor: 1.0,
        ema_decay: None,
    }
}
