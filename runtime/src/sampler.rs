//! The samplers of MONAI Generative 0.2.3 (DDIM, DDPM, PNDM) as per-step coefficient rows plus
//! one elementwise update per sampler. The rows are computed once on the host from the schedule
//! (`plan`); the CPU backend runs the updates below, the CUDA backend uploads the same rows and
//! its kernels (`cuda/src/kernels/sampler.cu`) repeat these updates operation by operation, so
//! there is one statement of the math.
//!
//! Every row holds `ROW` floats. DDIM: `[sqrt(1-a_t), sqrt(a_t), sqrt(a_prev), dir, std_dev,
//! noisy]`. DDPM: `[sqrt(1-a_t), sqrt(a_t), x0_coeff, cur_coeff, sigma, noisy]`. PNDM: see
//! `pndm_update`. PNDM keeps state between steps (`PNDM_STATE_VECTORS` latents: four slots of
//! past model outputs, the Runge-Kutta start sample, the Runge-Kutta accumulator); the row says
//! which slots each step combines, so the state never moves.

use crate::error::RuntimeError;
use crate::schedule::{ddim_timesteps, ddpm_timesteps, pndm_timesteps, Schedule};
use ldm_weights::{PredictionType, SamplerKind, SchedulerConfig, VarianceType};

/// The sampler that turns noise into a latent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    /// DDIM with stochasticity `eta` (0 = deterministic, the bundle's default).
    Ddim { eta: f32 },
    /// Ancestral DDPM (x0 clipped and variance as configured in the blob); its default step
    /// count is every training timestep unless the blob's default sampler is DDPM.
    Ddpm,
    /// PNDM (PLMS, after a Runge-Kutta warm-up unless the blob says `skip_prk_steps`);
    /// deterministic.
    Pndm,
}

impl Sampler {
    /// Whether it draws fresh noise at each step (DDPM, DDIM with eta > 0), so that the initial
    /// noise alone does not decide the result.
    pub fn is_stochastic(self) -> bool {
        match self {
            Sampler::Ddim { eta } => eta != 0.0,
            Sampler::Ddpm => true,
            Sampler::Pndm => false,
        }
    }
}

/// Floats per step row.
pub const ROW: usize = 20;
/// Latent-sized vectors of PNDM state: slots 0..4, the current sample, the accumulator.
pub const PNDM_STATE_VECTORS: usize = 6;

/// Term sources of a PNDM row: slot 0..4, the model output of this step, the accumulator.
const SRC_MODEL: f32 = 4.0;
const SRC_ACC: f32 = 5.0;
const SRC_NONE: f32 = -1.0;
const STATE_CUR: usize = 4;
const STATE_ACC: usize = 5;

/// What a run of one sampler does: the model's timesteps in order and one row per step.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerPlan {
    pub kind: SamplerKind,
    pub prediction: PredictionType,
    /// Clamp the predicted x0 to [-1, 1] (DDIM, DDPM).
    pub clip: bool,
    pub timesteps: Vec<u32>,
    pub rows: Vec<f32>,
    /// Whether steps add fresh noise (DDPM; DDIM with eta > 0).
    pub stochastic: bool,
}

impl SamplerPlan {
    pub fn row(&self, step: usize) -> &[f32] {
        &self.rows[step * ROW..(step + 1) * ROW]
    }
    /// Latent-sized state vectors the sampler keeps between steps.
    pub fn state_vectors(&self) -> usize {
        match self.kind {
            SamplerKind::Pndm => PNDM_STATE_VECTORS,
            _ => 0,
        }
    }
}

/// The integer code of a prediction type in the kernels' arguments.
pub fn prediction_code(p: PredictionType) -> i32 {
    match p {
        PredictionType::Epsilon => 0,
        PredictionType::Sample => 1,
        PredictionType::VPrediction => 2,
    }
}

/// The sampler kind of a run option.
pub fn kind_of(s: Sampler) -> SamplerKind {
    match s {
        Sampler::Ddim { .. } => SamplerKind::Ddim,
        Sampler::Ddpm => SamplerKind::Ddpm,
        Sampler::Pndm => SamplerKind::Pndm,
    }
}

fn padded(values: &[f32]) -> [f32; ROW] {
    let mut row = [0.0f32; ROW];
    row[..values.len()].copy_from_slice(values);
    row
}

/// MONAI's steps divide by `1 - alphas_cumprod[t]`; at a timestep where it is 0 (the cosine
/// schedule's timestep 0) they return NaN. Refused instead.
fn check_alpha(sampler: &str, t: usize, a_t: f32) -> Result<(), RuntimeError> {
    if a_t < 1.0 {
        return Ok(());
    }
    Err(RuntimeError::InvalidConfig(format!(
        "{sampler}: alphas_cumprod[{t}] is 1 (the cosine schedule at timestep 0), where MONAI's step divides zero by zero \
         and returns NaN; a steps_offset of at least 1 (DDIM, PNDM) avoids that timestep"
    )))
}

/// The plan of `sampler` over `steps` inference steps of the model's scheduler.
pub fn plan(
    cfg: &SchedulerConfig,
    s: &Schedule,
    sampler: Sampler,
    steps: usize,
) -> Result<SamplerPlan, RuntimeError> {
    let t_train = s.num_train_timesteps();
    let kind = kind_of(sampler);
    let (timesteps, rows, stochastic) = match sampler {
        Sampler::Ddim { eta } => {
            if !(eta.is_finite() && eta >= 0.0) {
                return Err(RuntimeError::InvalidOption(format!(
                    "DDIM eta {eta} must be finite and >= 0"
                )));
            }
            let ts = ddim_timesteps(t_train, steps, cfg.ddim.steps_offset)?;
            let final_alpha = if cfg.ddim.set_alpha_to_one {
                1.0
            } else {
                s.alphas_cumprod[0]
            };
            let rows = ddim_rows(s, &ts, (t_train / steps) as i64, eta, final_alpha)?;
            (ts, rows, eta > 0.0)
        }
        Sampler::Ddpm => {
            let ts = ddpm_timesteps(t_train, steps)?;
            let rows = ddpm_rows(s, &ts, cfg.ddpm.variance_type)?;
            (ts, rows, true)
        }
        Sampler::Pndm => {
            if cfg.prediction_type == PredictionType::Sample {
                return Err(RuntimeError::InvalidOption(
                    "PNDM cannot sample a model that predicts x0 (MONAI's PNDMScheduler takes epsilon or v_prediction); use ddim or ddpm".into(),
                ));
            }
            let p = &cfg.pndm;
            let ts = pndm_timesteps(t_train, steps, p.steps_offset, p.skip_prk_steps)?;
            let final_alpha = if p.set_alpha_to_one {
                1.0
            } else {
                s.alphas_cumprod[0]
            };
            let prk_steps = if p.skip_prk_steps { 0 } else { 12 };
            // MONAI's set_timesteps leaves num_inference_steps = len(timesteps) (n + 9 with the
            // warm-up), and the steps divide T by that: the distance to the previous timestep
            // is T // len(timesteps), not the grid's T // n.
            let rows = pndm_rows(s, &ts, (t_train / ts.len()) as i64, prk_steps, final_alpha)?;
            (ts, rows, false)
        }
    };
    Ok(SamplerPlan {
        kind,
        prediction: cfg.prediction_type,
        clip: cfg.clip_sample(kind),
        timesteps,
        rows,
        stochastic,
    })
}

/// DDIM rows; `ratio` = T // steps, `final_alpha` the previous alpha past timestep 0.
fn ddim_rows(
    s: &Schedule,
    ts: &[u32],
    ratio: i64,
    eta: f32,
    final_alpha: f32,
) -> Result<Vec<f32>, RuntimeError> {
    let mut out = Vec::with_capacity(ts.len() * ROW);
    for &t in ts {
        let a_t = s.alphas_cumprod[t as usize];
        check_alpha("DDIM", t as usize, a_t)?;
        let a_prev = s.alpha_cumprod_or(t as i64 - ratio, final_alpha);
        let b_t = 1.0 - a_t;
        let b_prev = 1.0 - a_prev;
        let variance = (b_prev / b_t) * (1.0 - a_t / a_prev);
        let std_dev = eta * variance.sqrt();
        let dir = (1.0 - a_prev - std_dev * std_dev).sqrt();
        let noisy = if eta > 0.0 { 1.0 } else { 0.0 };
        out.extend_from_slice(&padded(&[
            b_t.sqrt(),
            a_t.sqrt(),
            a_prev.sqrt(),
            dir,
            std_dev,
            noisy,
        ]));
    }
    Ok(out)
}

/// DDPM rows: the posterior mean's coefficients and the standard deviation of `variance`.
fn ddpm_rows(s: &Schedule, ts: &[u32], variance: VarianceType) -> Result<Vec<f32>, RuntimeError> {
    let mut out = Vec::with_capacity(ts.len() * ROW);
    for &t in ts {
        let t = t as usize;
        let a_t = s.alphas_cumprod[t];
        check_alpha("DDPM", t, a_t)?;
        let a_prev = if t > 0 {
            s.alphas_cumprod[t - 1]
        } else {
            1.0f32
        };
        let b_t = 1.0 - a_t;
        let b_prev = 1.0 - a_prev;
        let x0_coeff = (a_prev.sqrt() * s.betas[t]) / b_t;
        let cur_coeff = s.alphas[t].sqrt() * b_prev / b_t;
        let var = match variance {
            VarianceType::FixedSmall => ((b_prev / b_t) * s.betas[t]).max(1e-20),
            VarianceType::FixedLarge => s.betas[t],
        };
        let noisy = if t > 0 { 1.0 } else { 0.0 };
        out.extend_from_slice(&padded(&[
            b_t.sqrt(),
            a_t.sqrt(),
            x0_coeff,
            cur_coeff,
            var.sqrt(),
            noisy,
        ]));
    }
    Ok(out)
}

/// One PNDM step as MONAI's `step_prk` / `step_plms` would take it, in row form.
struct PndmRow {
    t: i64,
    prev: i64,
    terms: Vec<(f32, f32)>,
    scale: f32,
    divisor: f32,
    /// 0: leave the accumulator, 1: set it to `coef * m`, 2: add `coef * m`.
    acc: (f32, f32),
    base_is_cur: bool,
    save_cur: bool,
    store: f32,
}

/// Replays MONAI's PNDM state machine (counter, `ets`, `cur_sample`, `cur_model_output`) over the
/// timestep list, once, on the host: which past outputs each step combines, with what weights,
/// between which two timesteps.
fn pndm_rows(
    s: &Schedule,
    ts: &[u32],
    ratio: i64,
    prk_steps: usize,
    final_alpha: f32,
) -> Result<Vec<f32>, RuntimeError> {
    let mut ets: Vec<usize> = Vec::new(); // append indices of the stored outputs, oldest first
    let mut appended = 0usize;
    let slot = |j: usize| (j % 4) as f32;
    let mut out = Vec::with_capacity(ts.len() * ROW);
    for (counter, &t) in ts.iter().enumerate() {
        let t = t as i64;
        let mut r = PndmRow {
            t,
            prev: t - ratio,
            terms: vec![(1.0, SRC_MODEL)],
            scale: 1.0,
            divisor: 1.0,
            acc: (0.0, 0.0),
            base_is_cur: false,
            save_cur: false,
            store: SRC_NONE,
        };
        if counter < prk_steps {
            let diff = if counter % 2 == 1 { 0 } else { ratio / 2 };
            r.prev = t - diff;
            r.t = ts[counter / 4 * 4] as i64;
            match counter % 4 {
                0 => {
                    r.acc = (1.0, (1.0f64 / 6.0) as f32);
                    r.save_cur = true;
                    ets.push(appended);
                    r.store = slot(appended);
                    appended += 1;
                }
                1 | 2 => {
                    r.acc = (2.0, (1.0f64 / 3.0) as f32);
                    r.base_is_cur = true;
                }
                _ => {
                    r.terms = vec![(1.0, SRC_ACC), ((1.0f64 / 6.0) as f32, SRC_MODEL)];
                    r.base_is_cur = true;
                }
            }
        } else {
            if counter != 1 {
                if ets.len() > 3 {
                    ets.remove(0);
                }
                ets.push(appended);
                r.store = slot(appended);
                appended += 1;
            } else {
                r.prev = t;
                r.t = t + ratio;
            }
            let age = |k: usize| slot(ets[ets.len() - k]);
            match (ets.len(), counter) {
                (1, 0) => r.save_cur = true,
                (1, 1) => {
                    r.terms = vec![(1.0, SRC_MODEL), (1.0, age(1))];
                    r.divisor = 2.0;
                    r.base_is_cur = true;
                }
                (2, _) => {
                    r.terms = vec![(3.0, SRC_MODEL), (-1.0, age(2))];
                    r.divisor = 2.0;
                }
                (3, _) => {
                    r.terms = vec![(23.0, SRC_MODEL), (-16.0, age(2)), (5.0, age(3))];
                    r.divisor = 12.0;
                }
                _ => {
                    r.terms = vec![
                        (55.0, SRC_MODEL),
                        (-59.0, age(2)),
                        (37.0, age(3)),
                        (-9.0, age(4)),
                    ];
                    r.scale = (1.0f64 / 24.0) as f32;
                }
            }
        }
        if r.t < 0 || r.t as usize >= s.num_train_timesteps() {
            return Err(RuntimeError::InvalidOption(format!(
                "PNDM timestep {} lies outside the schedule",
                r.t
            )));
        }
        let a_t = s.alphas_cumprod[r.t as usize];
        check_alpha("PNDM", r.t as usize, a_t)?;
        let a_prev = s.alpha_cumprod_or(r.prev, final_alpha);
        let b_t = 1.0 - a_t;
        let b_prev = 1.0 - a_prev;
        let sample_coeff = (a_prev / a_t).sqrt();
        let denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
        let mut row = [0.0f32; ROW];
        row[..5].copy_from_slice(&[a_t.sqrt(), b_t.sqrt(), sample_coeff, a_prev - a_t, denom]);
        for k in 0..4 {
            let (w, src) = r.terms.get(k).copied().unwrap_or((0.0, SRC_NONE));
            row[5 + k] = w;
            row[9 + k] = src;
        }
        row[13] = r.scale;
        row[14] = r.divisor;
        row[15] = r.acc.0;
        row[16] = r.acc.1;
        row[17] = f32::from(u8::from(r.base_is_cur));
        row[18] = f32::from(u8::from(r.save_cur));
        row[19] = r.store;
        out.extend_from_slice(&row);
    }
    Ok(out)
}

/// The predicted x0 and noise of MONAI's DDIM step (the noise from the unclamped x0).
#[inline(always)]
fn predict(prediction: i32, x: f32, m: f32, sqrt_bt: f32, sqrt_at: f32) -> (f32, f32) {
    match prediction {
        0 => ((x - sqrt_bt * m) / sqrt_at, m),
        1 => (m, (x - sqrt_at * m) / sqrt_bt),
        _ => (sqrt_at * x - sqrt_bt * m, sqrt_at * m + sqrt_bt * x),
    }
}

/// One DDIM step in place, `x <- x_prev`, from the model output `m`. `noise` is used when the
/// row says the step is noisy (eta > 0).
pub fn ddim_update(
    row: &[f32],
    prediction: PredictionType,
    clip: bool,
    x: &mut [f32],
    m: &[f32],
    noise: Option<&[f32]>,
) {
    let (sqrt_bt, sqrt_at, sqrt_aprev, dir, std_dev) = (row[0], row[1], row[2], row[3], row[4]);
    let noisy = row[5] != 0.0;
    let p = prediction_code(prediction);
    for (i, (xv, &mv)) in x.iter_mut().zip(m).enumerate() {
        let (mut x0, e) = predict(p, *xv, mv, sqrt_bt, sqrt_at);
        if clip {
            x0 = x0.clamp(-1.0, 1.0);
        }
        let mut v = sqrt_aprev * x0 + dir * e;
        if noisy {
            if let Some(n) = noise {
                v += std_dev * n[i];
            }
        }
        *xv = v;
    }
}

/// One DDPM step in place, `x <- x_{t-1}`: the posterior mean plus `sigma * noise` for t > 0.
pub fn ddpm_update(
    row: &[f32],
    prediction: PredictionType,
    clip: bool,
    x: &mut [f32],
    m: &[f32],
    noise: &[f32],
) {
    let (sqrt_bt, sqrt_at, x0_coeff, cur_coeff, sigma) = (row[0], row[1], row[2], row[3], row[4]);
    let noisy = row[5] != 0.0;
    let p = prediction_code(prediction);
    for ((xv, &mv), &n) in x.iter_mut().zip(m).zip(noise) {
        let mut x0 = match p {
            0 => (*xv - sqrt_bt * mv) / sqrt_at,
            1 => mv,
            _ => sqrt_at * *xv - sqrt_bt * mv,
        };
        if clip {
            x0 = x0.clamp(-1.0, 1.0);
        }
        let mut v = x0_coeff * x0 + cur_coeff * *xv;
        if noisy {
            v += sigma * n;
        }
        *xv = v;
    }
}

/// One PNDM step in place. Row: `[sqrt(a_t), sqrt(1-a_t), sample_coeff, a_prev - a_t, denom,
/// w0..w3, src0..src3, scale, divisor, acc_mode, acc_coef, base_is_cur, save_cur, store_slot]`.
/// The combined output is `scale * (w0 s0 + w1 s1 + ...) / divisor` over the sources (a slot,
/// this step's output, the accumulator); v-prediction turns it into noise against the base
/// sample (x, or the Runge-Kutta start sample); then `x = sample_coeff base - (a_prev - a_t)
/// combined / denom`. `state` holds `PNDM_STATE_VECTORS` latents of `x.len()` each.
pub fn pndm_update(
    row: &[f32],
    prediction: PredictionType,
    x: &mut [f32],
    m: &[f32],
    state: &mut [f32],
) {
    let n = x.len();
    let (sqrt_at, sqrt_bt, sample_coeff, alpha_diff, denom) =
        (row[0], row[1], row[2], row[3], row[4]);
    let (scale, divisor, acc_mode, acc_coef) = (row[13], row[14], row[15], row[16]);
    let (base_is_cur, save_cur, store) = (row[17] != 0.0, row[18] != 0.0, row[19]);
    let v_pred = prediction == PredictionType::VPrediction;
    for i in 0..n {
        let (xi, mi) = (x[i], m[i]);
        let source = |src: f32| -> f32 {
            if src == SRC_MODEL {
                mi
            } else {
                state[src as usize * n + i]
            }
        };
        let mut sum = row[5] * source(row[9]);
        for k in 1..4 {
            if row[9 + k] >= 0.0 {
                sum += row[5 + k] * source(row[9 + k]);
            }
        }
        let combined = scale * sum / divisor;
        let base = if base_is_cur {
            state[STATE_CUR * n + i]
        } else {
            xi
        };
        let eff = if v_pred {
            sqrt_at * combined + sqrt_bt * base
        } else {
            combined
        };
        x[i] = sample_coeff * base - alpha_diff * eff / denom;
        if acc_mode == 1.0 {
            state[STATE_ACC * n + i] = acc_coef * mi;
        } else if acc_mode == 2.0 {
            state[STATE_ACC * n + i] += acc_coef * mi;
        }
        if save_cur {
            state[STATE_CUR * n + i] = xi;
        }
        if store >= 0.0 {
            state[store as usize * n + i] = mi;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldm_weights::SchedulerConfig;

    fn inputs(n: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut x = vec![0f32; n];
        let mut e = vec![0f32; n];
        let mut z = vec![0f32; n];
        crate::philox_normal(seed, 0, &mut x);
        crate::philox_normal(seed, n as u64, &mut e);
        crate::philox_normal(seed, 2 * n as u64, &mut z);
        x.iter_mut().for_each(|v| *v *= 3.0); // some x0 outside [-1, 1] so clipping matters
        (x, e, z)
    }

    /// The format-1 runtime's DDIM update (epsilon, no clamp), kept as the reference that the
    /// table form reproduces bit for bit: old blobs sample exactly as before.
    fn old_ddim_step(
        s: &Schedule,
        t: u32,
        prev_offset: usize,
        eta: f32,
        x: &mut [f32],
        eps: &[f32],
        noise: &[f32],
    ) {
        let t = t as usize;
        let a_t = s.alphas_cumprod[t];
        let a_prev = if t >= prev_offset {
            s.alphas_cumprod[t - prev_offset]
        } else {
            1.0f32
        };
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let std_dev = eta * ((b_prev / b_t) * (1.0 - a_t / a_prev)).sqrt();
        let dir = (1.0 - a_prev - std_dev * std_dev).sqrt();
        for (i, (xv, &e)) in x.iter_mut().zip(eps).enumerate() {
            let x0 = (*xv - b_t.sqrt() * e) / a_t.sqrt();
            let mut v = a_prev.sqrt() * x0 + dir * e;
            if eta > 0.0 {
                v += std_dev * noise[i];
            }
            *xv = v;
        }
    }

    /// The format-1 runtime's DDPM update (epsilon, fixed_small).
    fn old_ddpm_step(s: &Schedule, t: u32, clip: bool, x: &mut [f32], eps: &[f32], noise: &[f32]) {
        let t = t as usize;
        let a_t = s.alphas_cumprod[t];
        let a_prev = if t > 0 {
            s.alphas_cumprod[t - 1]
        } else {
            1.0f32
        };
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let x0_coeff = (a_prev.sqrt() * s.betas[t]) / b_t;
        let cur_coeff = s.alphas[t].sqrt() * b_prev / b_t;
        let sigma = ((b_prev / b_t) * s.betas[t]).max(1e-20).sqrt();
        for ((xv, &e), &n) in x.iter_mut().zip(eps).zip(noise) {
            let mut x0 = (*xv - b_t.sqrt() * e) / a_t.sqrt();
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

    fn bits(a: &[f32]) -> Vec<u32> {
        a.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn format_1_ddim_and_ddpm_sample_bit_for_bit_as_before() {
        let cfg =
            ldm_weights::format::legacy_scheduler(ldm_weights::format::LegacySchedulerConfig {
                num_train_timesteps: 1000,
                beta_schedule: ldm_weights::format::LegacyBetaSchedule::ScaledLinear,
                beta_start: 0.0015,
                beta_end: 0.0195,
                clip_sample: true,
                default_sampler: ldm_weights::format::LegacySamplerKind::Ddim,
                default_steps: 50,
            });
        let s = Schedule::new(&cfg).unwrap();
        let (x, e, z) = inputs(1000, 11);
        for eta in [0.0f32, 0.5] {
            let p = plan(&cfg, &s, Sampler::Ddim { eta }, 50).unwrap();
            assert!(!p.clip && p.stochastic == (eta > 0.0));
            let (mut new, mut old) = (x.clone(), x.clone());
            for (k, &t) in p.timesteps.iter().enumerate() {
                ddim_update(p.row(k), p.prediction, p.clip, &mut new, &e, Some(&z));
                old_ddim_step(&s, t, 20, eta, &mut old, &e, &z);
            }
            assert_eq!(bits(&new), bits(&old), "eta {eta}");
        }
        for clip in [true, false] {
            let mut c = cfg.clone();
            c.ddpm.clip_sample = clip;
            let p = plan(&c, &s, Sampler::Ddpm, 1000).unwrap();
            let (mut new, mut old) = (x.clone(), x.clone());
            for k in (0..1000).step_by(37).chain([999]) {
                ddpm_update(p.row(k), p.prediction, p.clip, &mut new, &e, &z);
                old_ddpm_step(&s, p.timesteps[k], clip, &mut old, &e, &z);
            }
            assert_eq!(bits(&new), bits(&old), "clip {clip}");
        }
    }

    #[test]
    fn pndm_rows_follow_the_state_machine() {
        let cfg = SchedulerConfig::bundle();
        let s = Schedule::new(&cfg).unwrap();
        let p = plan(&cfg, &s, Sampler::Pndm, 10).unwrap();
        assert_eq!(p.timesteps.len(), 19);
        assert_eq!(p.state_vectors(), PNDM_STATE_VECTORS);
        // Step 3 closes the first Runge-Kutta step: accumulator + m / 6 from the start sample.
        let r = p.row(3);
        assert_eq!((r[9], r[10], r[17]), (SRC_ACC, SRC_MODEL, 1.0));
        // From step 15 on, four stored outputs: the fourth-order Adams-Bashforth weights.
        let r = p.row(15);
        assert_eq!(&r[5..9], &[55.0, -59.0, 37.0, -9.0]);
        let skip = SchedulerConfig {
            pndm: ldm_weights::PndmSettings {
                skip_prk_steps: true,
                ..cfg.pndm.clone()
            },
            ..cfg.clone()
        };
        let p = plan(&skip, &s, Sampler::Pndm, 10).unwrap();
        assert_eq!(p.timesteps.len(), 10);
        assert_eq!(
            (p.row(1)[14], p.row(1)[17]),
            (2.0, 1.0),
            "the second step averages and restarts from the first sample"
        );
    }

    #[test]
    fn a_cosine_schedule_at_timestep_0_is_refused() {
        let mut cfg = SchedulerConfig::bundle();
        cfg.beta_schedule = ldm_weights::BetaSchedule::Cosine { s: 0.008 };
        let s = Schedule::new(&cfg).unwrap();
        for sampler in [Sampler::Ddim { eta: 0.0 }, Sampler::Ddpm, Sampler::Pndm] {
            let e = plan(&cfg, &s, sampler, 10).unwrap_err();
            assert!(e.to_string().contains("steps_offset"), "{e}");
        }
        cfg.ddim.steps_offset = 1;
        assert!(plan(&cfg, &s, Sampler::Ddim { eta: 0.0 }, 10).is_ok());
    }

    #[test]
    fn pndm_refuses_a_model_predicting_x0() {
        let mut cfg = SchedulerConfig::bundle();
        cfg.prediction_type = PredictionType::Sample;
        let s = Schedule::new(&cfg).unwrap();
        let e = plan(&cfg, &s, Sampler::Pndm, 10).unwrap_err();
        assert!(e.to_string().contains("PNDM"), "{e}");
        assert!(plan(&cfg, &s, Sampler::Ddim { eta: 0.0 }, 10).is_ok());
    }
}
