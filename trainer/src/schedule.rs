//! The DDPM training noise schedule (generative 0.2.3 `DDPMScheduler`): betas (linear or
//! scaled-linear, computed like `torch.linspace` in f32), `alphas_cumprod` as a sequential f32
//! product, and `add_noise`: `x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps`.

use ldm_weights::{BetaSchedule, SchedulerConfig};

/// `torch.linspace(start, end, n)` in f32 (computed from both ends, as PyTorch does).
fn linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n).map(|i| if i < half { start + step * i as f32 } else { end - step * (n - 1 - i) as f32 }).collect()
}

/// `alphas_cumprod[t]` for t in 0..T.
pub fn alphas_cumprod(cfg: &SchedulerConfig) -> Vec<f32> {
    let t = cfg.num_train_timesteps as usize;
    let betas: Vec<f32> = match cfg.beta_schedule {
        BetaSchedule::Linear => linspace_f32(cfg.beta_start, cfg.beta_end, t),
        BetaSchedule::ScaledLinear => {
            linspace_f32(cfg.beta_start.sqrt(), cfg.beta_end.sqrt(), t).iter().map(|b| b * b).collect()
        }
    };
    let mut acc = 1.0f32;
    betas
        .iter()
        .map(|b| {
            acc *= 1.0 - b;
            acc
        })
        .collect()
}

/// `x_t = sqrt(a) x0 + sqrt(1 - a) eps` for one sample with cumulative alpha `a`.
pub fn add_noise(x0: &[f32], eps: &[f32], alpha_cumprod: f32) -> Vec<f32> {
    let (sa, sb) = (alpha_cumprod.sqrt(), (1.0 - alpha_cumprod).sqrt());
    x0.iter().zip(eps).map(|(&x, &e)| sa * x + sb * e).collect()
}
