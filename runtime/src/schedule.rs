//! The training noise schedule (betas, alphas, cumulative products) of MONAI Generative 0.2.3's
//! `NoiseSchedules` (`linear_beta`, `scaled_linear_beta`, `sigmoid_beta`, `cosine`), and each
//! sampler's inference timesteps exactly as its `set_timesteps` lists them.

use crate::error::RuntimeError;
use ldm_weights::{BetaSchedule, SchedulerConfig};

/// Betas, alphas and cumulative products of the training schedule, as PyTorch computes them:
/// betas in f32 (`linspace` of f32), cumprod accumulated in f64 and rounded to f32 per element
/// (PyTorch CPU's accumulation type). The cosine schedule gives its own cumulative products
/// (MONAI's, normalised so that `alphas_cumprod[0] == 1`), not the product of its clipped alphas.
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

/// MONAI's `_cosine_beta`: `(betas, alphas, alphas_cumprod)`.
fn cosine(t: usize, s: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let x = linspace_f32(0.0, t as f32, t + 1);
    let denom = (1.0 + s as f64) as f32;
    let pi = std::f32::consts::PI;
    let mut ac: Vec<f32> = x
        .iter()
        .map(|&v| {
            let arg = (v / t as f32 + s) / denom * pi * 0.5;
            let c = (arg as f64).cos() as f32;
            c * c
        })
        .collect();
    let first = ac[0];
    ac.iter_mut().for_each(|v| *v /= first);
    let alphas: Vec<f32> = ac.windows(2).map(|w| (w[1] / w[0]).clamp(0.0001, 0.9999)).collect();
    let betas = alphas.iter().map(|a| 1.0 - a).collect();
    ac.pop();
    (betas, alphas, ac)
}

impl Schedule {
    pub fn new(cfg: &SchedulerConfig) -> Result<Schedule, RuntimeError> {
        let t = cfg.num_train_timesteps as usize;
        if t == 0 || t > 100_000 {
            return Err(RuntimeError::InvalidConfig(format!("num_train_timesteps {t} must be in 1..=100000")));
        }
        if !(cfg.beta_start.is_finite() && cfg.beta_end.is_finite()) || cfg.beta_start <= 0.0 || cfg.beta_end >= 1.0 {
            return Err(RuntimeError::InvalidConfig(format!("betas {}..{} must lie in (0, 1)", cfg.beta_start, cfg.beta_end)));
        }
        let betas: Vec<f32> = match cfg.beta_schedule {
            BetaSchedule::Linear => linspace_f32(cfg.beta_start, cfg.beta_end, t),
            BetaSchedule::ScaledLinear => {
                let s = (cfg.beta_start as f64).sqrt() as f32;
                let e = (cfg.beta_end as f64).sqrt() as f32;
                linspace_f32(s, e, t).into_iter().map(|b| b * b).collect()
            }
            BetaSchedule::Sigmoid { sig_range } => {
                let range = (cfg.beta_end as f64 - cfg.beta_start as f64) as f32;
                linspace_f32(-sig_range, sig_range, t)
                    .into_iter()
                    .map(|v| (1.0 / (1.0 + (-(v as f64)).exp())) as f32 * range + cfg.beta_start)
                    .collect()
            }
            BetaSchedule::Cosine { s } => {
                let (betas, alphas, alphas_cumprod) = cosine(t, s);
                return Ok(Schedule { betas, alphas, alphas_cumprod });
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

    /// `alphas_cumprod[t]` for a signed timestep: `below_zero` (the sampler's final alpha) when
    /// `t < 0`, as MONAI's `alphas_cumprod[prev] if prev >= 0 else final_alpha_cumprod`.
    pub fn alpha_cumprod_or(&self, t: i64, below_zero: f32) -> f32 {
        if t < 0 {
            below_zero
        } else {
            self.alphas_cumprod[t as usize]
        }
    }
}

fn check_steps(what: &str, num_train: usize, n: usize) -> Result<(), RuntimeError> {
    if n == 0 || n > num_train {
        return Err(RuntimeError::InvalidOption(format!("{what} steps must be in 1..={num_train}, got {n}")));
    }
    Ok(())
}

/// `arange(n) * (T // n)`, ascending: the grid every MONAI scheduler starts from.
fn grid(num_train: usize, n: usize) -> Vec<i64> {
    let ratio = (num_train / n) as i64;
    (0..n as i64).map(|i| i * ratio).collect()
}

fn in_range(what: &str, num_train: usize, ts: &[i64]) -> Result<Vec<u32>, RuntimeError> {
    match ts.iter().find(|&&t| t < 0 || t >= num_train as i64) {
        Some(t) => Err(RuntimeError::InvalidOption(format!(
            "{what} timestep {t} lies outside the {num_train} training timesteps (lower steps_offset or the step count)"
        ))),
        None => Ok(ts.iter().map(|&t| t as u32).collect()),
    }
}

/// DDIM timesteps for `n` inference steps: `arange(n) * (T // n)` reversed, plus `offset`.
pub fn ddim_timesteps(num_train: usize, n: usize, offset: u32) -> Result<Vec<u32>, RuntimeError> {
    check_steps("DDIM", num_train, n)?;
    let ts: Vec<i64> = grid(num_train, n).into_iter().rev().map(|t| t + offset as i64).collect();
    in_range("DDIM", num_train, &ts)
}

/// DDPM timesteps for `n` inference steps: `arange(n) * (T // n)` reversed (every training
/// timestep when `n == T`).
pub fn ddpm_timesteps(num_train: usize, n: usize) -> Result<Vec<u32>, RuntimeError> {
    check_steps("DDPM", num_train, n)?;
    in_range("DDPM", num_train, &grid(num_train, n).into_iter().rev().collect::<Vec<_>>())
}

/// PNDM's model timesteps for `n` inference steps: with the Runge-Kutta warm-up, the 12 PRK
/// timesteps (three Runge-Kutta steps over the four largest grid points, each with half steps)
/// then the grid without its three largest points, descending (`n + 9` in all, `n >= 4`);
/// with `skip_prk`, the grid descending. `offset` is added to the grid first.
pub fn pndm_timesteps(num_train: usize, n: usize, offset: u32, skip_prk: bool) -> Result<Vec<u32>, RuntimeError> {
    check_steps("PNDM", num_train, n)?;
    let base: Vec<i64> = grid(num_train, n).into_iter().map(|t| t + offset as i64).collect();
    if skip_prk {
        return in_range("PNDM", num_train, &base.into_iter().rev().collect::<Vec<_>>());
    }
    if n < 4 {
        return Err(RuntimeError::InvalidOption(format!(
            "PNDM with its Runge-Kutta warm-up needs at least 4 steps, got {n} (or store skip_prk_steps)"
        )));
    }
    let half = ((num_train / n) / 2) as i64;
    // The four largest points, each followed by its half step; drop the last, double every
    // entry, drop the first and last copies, reverse.
    let mut pairs: Vec<i64> = base[n - 4..].iter().flat_map(|&t| [t, t + half]).collect();
    pairs.pop();
    let doubled: Vec<i64> = pairs.iter().flat_map(|&t| [t, t]).collect();
    let mut ts: Vec<i64> = doubled[1..doubled.len() - 1].iter().rev().copied().collect();
    ts.extend(base[..n - 3].iter().rev());
    in_range("PNDM", num_train, &ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddim_lists_follow_generative_0_2_3() {
        let v = ddim_timesteps(1000, 50, 0).unwrap();
        assert_eq!(v.len(), 50);
        assert_eq!((v[0], v[1], v[49]), (980, 960, 0));
        assert_eq!(ddim_timesteps(1000, 10, 0).unwrap(), vec![900, 800, 700, 600, 500, 400, 300, 200, 100, 0]);
        assert_eq!(ddim_timesteps(1000, 10, 1).unwrap()[0], 901);
        assert_eq!(ddim_timesteps(1000, 1000, 0).unwrap()[0], 999);
        assert_eq!(ddim_timesteps(1000, 7, 0).unwrap(), vec![852, 710, 568, 426, 284, 142, 0]);
        assert!(ddim_timesteps(1000, 0, 0).is_err());
        assert!(ddim_timesteps(1000, 1001, 0).is_err());
        assert!(ddim_timesteps(1000, 1000, 1).is_err(), "999 + 1 is past the schedule");
    }

    #[test]
    fn pndm_lists_follow_generative_0_2_3() {
        let v = pndm_timesteps(1000, 10, 0, false).unwrap();
        assert_eq!(v, vec![900, 850, 850, 800, 800, 750, 750, 700, 700, 650, 650, 600, 600, 500, 400, 300, 200, 100, 0]);
        assert_eq!(pndm_timesteps(1000, 10, 0, true).unwrap(), ddim_timesteps(1000, 10, 0).unwrap());
        assert!(pndm_timesteps(1000, 3, 0, false).is_err());
        assert_eq!(pndm_timesteps(1000, 3, 0, true).unwrap(), vec![666, 333, 0]);
    }
}
