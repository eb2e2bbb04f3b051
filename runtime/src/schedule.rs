//! Noise schedules and sampler updates (DDIM, DDPM) with MONAI Generative 0.2.3 semantics.

use crate::error::RuntimeError;
use ldm_weights::{BetaSchedule, SchedulerConfig};

/// Betas, alphas and cumulative products of the training schedule, as PyTorch computes them:
/// betas in f32 (`linspace` of f32 then squared for scaled-linear), cumprod accumulated in f64
/// and rounded to f32 per element (PyTorch CPU's accumulation type).
#[derive(Debug, Clone)]
pub struct Schedule {
    pub betas: Vec<f32>,
    pub alphas: Vec<f32>,
    pub alphas_cumprod: Vec<f32>,
}

/// `torch.linspace(start, end, steps, dtype=float32)`.
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (steps - i - 1) as f32
            }
        })
        .collect()
}

impl Schedule {
    pub fn new(cfg: &SchedulerConfig) -> Result<Schedule, RuntimeError> {
        let t = cfg.num_train_timesteps as usize;
        if t == 0 || t > 100_000 {
            return Err(RuntimeError::InvalidConfig(format!(
                "num_train_timesteps {t} must be in 1..=100000"
            )));
        }
        if !(cfg.beta_start.is_finite() && cfg.beta_end.is_finite())
            || cfg.beta_start <= 0.0
            || cfg.beta_end >= 1.0
        {
            return Err(RuntimeError::InvalidConfig(format!(
                "betas {}..{} must lie in (0, 1)",
                cfg.beta_start, cfg.beta_end
            )));
        }
        let betas: Vec<f32> = match cfg.beta_schedule {
            BetaSchedule::Linear => linspace_f32(cfg.beta_start, cfg.beta_end, t),
            BetaSchedule::ScaledLinear => {
                let s = (cfg.beta_start as f64).sqrt() as f32;
                let e = (cfg.beta_end as f64).sqrt() as f32;
                linspace_f32(s, e, t).into_iter().map(|b| b * b).collect()
            }
        };
        let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
        let mut acc = 1.0f64;
        let alphas_cumprod = alphas
            .iter()
            .map(|&a| {
                acc *= a as f64;
                acc as f32
            })
            .collect();
        Ok(Schedule { betas, alphas, alphas_cumprod })
    }

    pub fn num_train_timesteps(&self) -> usize {
        self.betas.len()
    }
}

/// DDIM timesteps for `n` inference steps: `(arange(n) * (T // n))` reversed.
pub fn ddim_timesteps(num_train: usize, n: usize) -> Result<Vec<u32>, RuntimeError> {
    if n == 0 || n > num_train {
        return Err(RuntimeError::InvalidOption(format!(
            "DDIM steps must be in 1..={num_train}, got {n}"
        )));
    }
    let ratio = num_train / n;
    Ok((0..n).rev().map(|i| (i * ratio) as u32).collect())
}

/// One DDIM update in place: `x <- x_prev`. `noise` is required when `eta > 0`.
/// `prev_offset` is `T // n` (the distance to the previous timestep).
pub fn ddim_step(
    s: &Schedule,
    t: u32,
    prev_offset: usize,
    eta: f32,
    x: &mut [f32],
    eps: &[f32],
    noise: Option<&[f32]>,
) {
    let t = t as usize;
    let a_t = s.alphas_cumprod[t];
    let a_prev = if t >= prev_offset { s.alphas_cumprod[t - prev_offset] } else { 1.0f32 };
    let b_t = 1.0 - a_t;
    let b_prev = 1.0 - a_prev;
    let variance = (b_prev / b_t) * (1.0 - a_t / a_prev);
    let std_dev = eta * variance.sqrt();
    let sqrt_bt = b_t.sqrt();
    let sqrt_at = a_t.sqrt();
    let sqrt_aprev = a_prev.sqrt();
    let dir = (1.0 - a_prev - std_dev * std_dev).sqrt();
    for (i, (xv, &e)) in x.iter_mut().zip(eps).enumerate() {
        let x0 = (*xv - sqrt_bt * e) / sqrt_at;
        let mut v = sqrt_aprev * x0 + dir * e;
        if eta > 0.0 {
            if let Some(n) = noise {
                v += std_dev * n[i];
            }
        }
        *xv = v;
    }
}

/// One DDPM update in place (epsilon prediction, fixed_small variance): `x <- x_{t-1}`.
/// `noise` is used for `t > 0`.
pub fn ddpm_step(s: &Schedule, t: u32, clip: bool, x: &mut [f32], eps: &[f32], noise: &[f32]) {
    let t = t as usize;
    let a_t = s.alphas_cumprod[t];
    let a_prev = if t > 0 { s.alphas_cumprod[t - 1] } else { 1.0f32 };
    let b_t = 1.0 - a_t;
    let b_prev = 1.0 - a_prev;
    let x0_coeff = (a_prev.sqrt() * s.betas[t]) / b_t;
    let cur_coeff = s.alphas[t].sqrt() * b_prev / b_t;
    let variance = ((b_prev / b_t) * s.betas[t]).max(1e-20);
    let sigma = variance.sqrt();
    let sqrt_bt = b_t.sqrt();
    let sqrt_at = a_t.sqrt();
    for ((xv, &e), &n) in x.iter_mut().zip(eps).zip(noise) {
        let mut x0 = (*xv - sqrt_bt * e) / sqrt_at;
        if clip {
            x0 = x0.clamp(-1.0, 1.0);
        }
        let mut v = x0_coeff * x0 + cur_coeff * *xv;
        if t > 0 {
            v += sigma * n;
        }
        *xv = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddim_lists_follow_generative_0_2_3() {
        let v = ddim_timesteps(1000, 50).unwrap();
        assert_eq!(v.len(), 50);
        assert_eq!((v[0], v[1], v[49]), (980, 960, 0));
        assert_eq!(ddim_timesteps(1000, 10).unwrap(), vec![900, 800, 700, 600, 500, 400, 300, 200, 100, 0]);
        assert_eq!(ddim_timesteps(1000, 1000).unwrap()[0], 999);
        assert!(ddim_timesteps(1000, 0).is_err());
        assert!(ddim_timesteps(1000, 1001).is_err());
    }

    #[test]
    fn ddim_eta_one_matches_the_formula() {
        let s = Schedule::new(&SchedulerConfig::bundle()).unwrap();
        let (t, prev) = (500u32, 20usize);
        let (x0v, e, n) = (0.7f32, -0.3f32, 1.2f32);
        let mut x = [x0v];
        ddim_step(&s, t, prev, 1.0, &mut x, &[e], Some(&[n]));
        let at = s.alphas_cumprod[500] as f64;
        let ap = s.alphas_cumprod[480] as f64;
        let x0 = (x0v as f64 - (1.0 - at).sqrt() * e as f64) / at.sqrt();
        let var = (1.0 - ap) / (1.0 - at) * (1.0 - at / ap);
        let want = ap.sqrt() * x0 + (1.0 - ap - var).sqrt() * e as f64 + var.sqrt() * n as f64;
        assert!((x[0] as f64 - want).abs() < 1e-5, "{} vs {want}", x[0]);
    }
}
