//! The diffusion training schedule and targets (generative 0.2.3 `DDPMScheduler.add_noise` and
//! `get_velocity`): `alphas_cumprod` from the runtime's `Schedule` (one implementation of every
//! beta schedule), `x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps`, and the regression target of the
//! UNet for its prediction type.

use ldm_runtime::schedule::Schedule;
use ldm_weights::{PredictionType, SchedulerConfig};

use crate::train::TrainError;

/// `alphas_cumprod[t]` for t in 0..T.
pub fn alphas_cumprod(cfg: &SchedulerConfig) -> Result<Vec<f32>, TrainError> {
    Schedule::new(cfg)
        .map(|s| s.alphas_cumprod)
        .map_err(|e| TrainError::Invalid(format!("scheduler: {e}")))
}

/// `x_t = sqrt(a) x0 + sqrt(1 - a) eps` for one sample with cumulative alpha `a`.
pub fn add_noise(x0: &[f32], eps: &[f32], alpha_cumprod: f32) -> Vec<f32> {
    let (sa, sb) = (alpha_cumprod.sqrt(), (1.0 - alpha_cumprod).sqrt());
    x0.iter().zip(eps).map(|(&x, &e)| sa * x + sb * e).collect()
}

/// What the UNet learns to output for one sample: the noise (epsilon), the clean sample
/// (sample), or the velocity `sqrt(a) eps - sqrt(1 - a) x0` (v_prediction, MONAI's
/// `get_velocity`).
pub fn training_target(prediction: PredictionType, x0: &[f32], eps: &[f32], alpha_cumprod: f32) -> Vec<f32> {
    match prediction {
        PredictionType::Epsilon => eps.to_vec(),
        PredictionType::Sample => x0.to_vec(),
        PredictionType::VPrediction => {
            let (sa, sb) = (alpha_cumprod.sqrt(), (1.0 - alpha_cumprod).sqrt());
            x0.iter().zip(eps).map(|(&x, &e)| sa * e - sb * x).collect()
        }
    }
}
