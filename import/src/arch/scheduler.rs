//! The `noise_scheduler` section: MONAI Generative's scheduler constructor arguments, validated
//! into the blob's scheduler configuration.

use ldm_weights::{
    BetaSchedule, DdimSettings, DdpmSettings, PndmSettings, PredictionType, SamplerKind,
    SchedulerConfig, VarianceType,
};
use serde::Deserialize;

use super::{invalid, ArchError};

/// A `noise_scheduler` section: MONAI Generative 0.2.3's `DDPMScheduler`, `DDIMScheduler` or
/// `PNDMScheduler` constructor arguments (plus `num_inference_steps`, and `sampler` naming the
/// class where there is no `_target_`). Every argument is honoured or refused by name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SchedulerDef {
    #[serde(rename = "_target_")]
    target: Option<String>,
    num_train_timesteps: Option<u32>,
    beta_start: Option<f32>,
    beta_end: Option<f32>,
    #[serde(alias = "beta_schedule")]
    schedule: Option<String>,
    /// `sigmoid_beta`'s range (MONAI default 6).
    sig_range: Option<f32>,
    /// `cosine`'s offset (MONAI default 8e-3).
    s: Option<f32>,
    prediction_type: Option<String>,
    clip_sample: Option<bool>,
    set_alpha_to_one: Option<bool>,
    steps_offset: Option<u32>,
    variance_type: Option<String>,
    skip_prk_steps: Option<bool>,
    /// Not a MONAI argument: the sampler ("ddim", "ddpm" or "pndm") where `_target_` is absent.
    sampler: Option<String>,
    num_inference_steps: Option<u32>,
}

/// The sampler a `_target_` names: the class name after the last dot.
fn sampler_of_target(target: &str) -> Result<SamplerKind, ArchError> {
    match target.rsplit('.').next().unwrap_or(target) {
        "DDIMScheduler" => Ok(SamplerKind::Ddim),
        "DDPMScheduler" => Ok(SamplerKind::Ddpm),
        "PNDMScheduler" => Ok(SamplerKind::Pndm),
        _ => Err(invalid(
            "noise_scheduler",
            format!("_target_ `{target}` is not supported (DDPMScheduler, DDIMScheduler, PNDMScheduler)"),
        )),
    }
}

/// Whether a MONAI schedule function takes `beta_start` and `beta_end` (all but `cosine`).
fn takes_betas_of(schedule: &str) -> bool {
    schedule != "cosine"
}

fn class_name(kind: SamplerKind) -> &'static str {
    match kind {
        SamplerKind::Ddim => "DDIMScheduler",
        SamplerKind::Ddpm => "DDPMScheduler",
        SamplerKind::Pndm => "PNDMScheduler",
    }
}

impl SchedulerDef {
    pub(super) fn validate(self) -> Result<SchedulerConfig, ArchError> {
        const S: &str = "noise_scheduler";
        let b = SchedulerConfig::bundle();
        let by_name = match self.sampler.as_deref() {
            None => None,
            Some("ddim") => Some(SamplerKind::Ddim),
            Some("ddpm") => Some(SamplerKind::Ddpm),
            Some("pndm") => Some(SamplerKind::Pndm),
            Some(other) => {
                return Err(invalid(
                    S,
                    format!("sampler `{other}` is not ddim, ddpm or pndm"),
                ))
            }
        };
        let by_target = self.target.as_deref().map(sampler_of_target).transpose()?;
        let kind = match (by_target, by_name) {
            (Some(t), Some(n)) if t != n => {
                return Err(invalid(
                    S,
                    format!(
                        "sampler `{}` contradicts _target_ {}",
                        n.name(),
                        class_name(t)
                    ),
                ))
            }
            (Some(k), _) | (None, Some(k)) => k,
            (None, None) => SamplerKind::Ddim,
        };
        let class = class_name(kind);
        // An argument the class does not take is a TypeError in MONAI: refused here too.
        let not_for = |arg: &str, given: bool, takes: &[SamplerKind]| {
            if given && !takes.contains(&kind) {
                Err(invalid(S, format!("{class} takes no argument `{arg}`")))
            } else {
                Ok(())
            }
        };
        use SamplerKind::{Ddim, Ddpm, Pndm};
        not_for("clip_sample", self.clip_sample.is_some(), &[Ddim, Ddpm])?;
        not_for(
            "set_alpha_to_one",
            self.set_alpha_to_one.is_some(),
            &[Ddim, Pndm],
        )?;
        not_for("steps_offset", self.steps_offset.is_some(), &[Ddim, Pndm])?;
        not_for("variance_type", self.variance_type.is_some(), &[Ddpm])?;
        not_for("skip_prk_steps", self.skip_prk_steps.is_some(), &[Pndm])?;

        // A section with `_target_` is a MONAI constructor call: what it leaves out takes MONAI's
        // defaults (linear_beta 1e-4..2e-2, clip_sample true). Without `_target_` it is this
        // project's shorthand, whose defaults are the bundle's.
        let monai = self.target.is_some();
        let schedule_name = self.schedule.as_deref().unwrap_or(if monai {
            "linear_beta"
        } else {
            "scaled_linear_beta"
        });
        let (default_start, default_end) = if monai || !takes_betas_of(schedule_name) {
            (1e-4, 2e-2)
        } else {
            (b.beta_start, b.beta_end)
        };
        let takes_betas = takes_betas_of(schedule_name);
        if !takes_betas && (self.beta_start.is_some() || self.beta_end.is_some()) {
            return Err(invalid(
                S,
                "the cosine schedule takes no beta_start or beta_end",
            ));
        }
        if self.sig_range.is_some() && schedule_name != "sigmoid_beta" {
            return Err(invalid(
                S,
                format!("sig_range applies to sigmoid_beta only, not `{schedule_name}`"),
            ));
        }
        if self.s.is_some() && schedule_name != "cosine" {
            return Err(invalid(
                S,
                format!("s applies to the cosine schedule only, not `{schedule_name}`"),
            ));
        }
        let beta_schedule = match schedule_name {
            "scaled_linear_beta" | "scaled_linear" => BetaSchedule::ScaledLinear,
            "linear_beta" | "linear" => BetaSchedule::Linear,
            "sigmoid_beta" => BetaSchedule::Sigmoid { sig_range: self.sig_range.unwrap_or(6.0) },
            "cosine" => BetaSchedule::Cosine { s: self.s.unwrap_or(8e-3) },
            other => {
                return Err(invalid(
                    S,
                    format!("schedule `{other}` is not supported (linear_beta, scaled_linear_beta, sigmoid_beta, cosine)"),
                ))
            }
        };
        let prediction_type = match self.prediction_type.as_deref() {
            None | Some("epsilon") => PredictionType::Epsilon,
            Some("sample") if kind == Pndm => {
                return Err(invalid(
                    S,
                    "PNDMScheduler has no prediction_type `sample` (epsilon, v_prediction)",
                ))
            }
            Some("sample") => PredictionType::Sample,
            Some("v_prediction") => PredictionType::VPrediction,
            Some(other) => {
                return Err(invalid(
                    S,
                    format!("prediction_type `{other}` is not epsilon, sample or v_prediction"),
                ))
            }
        };
        let variance_type = match self.variance_type.as_deref() {
            None | Some("fixed_small") => VarianceType::FixedSmall,
            Some("fixed_large") => VarianceType::FixedLarge,
            Some(v @ ("learned" | "learned_range")) => {
                return Err(invalid(
                    S,
                    format!("variance_type `{v}` needs a UNet that predicts its variance, which is not supported (fixed_small, fixed_large)"),
                ))
            }
            Some(other) => return Err(invalid(S, format!("variance_type `{other}` is not fixed_small or fixed_large"))),
        };
        // The named class takes the section's arguments on top of MONAI's defaults; the other
        // samplers keep their own class's defaults.
        let mut ddpm = DdpmSettings::monai_default();
        let mut ddim = if monai {
            DdimSettings::monai_default()
        } else {
            b.ddim.clone()
        };
        let mut pndm = PndmSettings::monai_default();
        match kind {
            Ddpm => {
                ddpm.clip_sample = self.clip_sample.unwrap_or(ddpm.clip_sample);
                ddpm.variance_type = variance_type;
            }
            Ddim => {
                ddim.clip_sample = self.clip_sample.unwrap_or(ddim.clip_sample);
                ddim.set_alpha_to_one = self.set_alpha_to_one.unwrap_or(ddim.set_alpha_to_one);
                ddim.steps_offset = self.steps_offset.unwrap_or(0);
            }
            Pndm => {
                pndm.skip_prk_steps = self.skip_prk_steps.unwrap_or(pndm.skip_prk_steps);
                pndm.set_alpha_to_one = self.set_alpha_to_one.unwrap_or(pndm.set_alpha_to_one);
                pndm.steps_offset = self.steps_offset.unwrap_or(0);
            }
        }
        let cfg = SchedulerConfig {
            num_train_timesteps: self.num_train_timesteps.unwrap_or(b.num_train_timesteps),
            beta_schedule,
            beta_start: self.beta_start.unwrap_or(default_start),
            beta_end: self.beta_end.unwrap_or(default_end),
            prediction_type,
            ddpm,
            ddim,
            pndm,
            default_sampler: kind,
            default_steps: self.num_inference_steps.unwrap_or(b.default_steps),
        };
        if cfg.num_train_timesteps == 0
            || cfg.default_steps == 0
            || cfg.default_steps > cfg.num_train_timesteps
        {
            return Err(invalid(
                S,
                "need 0 < num_inference_steps <= num_train_timesteps",
            ));
        }
        if !(cfg.beta_start > 0.0 && cfg.beta_start < cfg.beta_end && cfg.beta_end < 1.0) {
            return Err(invalid(
                S,
                format!(
                    "need 0 < beta_start < beta_end < 1, got {} and {}",
                    cfg.beta_start, cfg.beta_end
                ),
            ));
        }
        cfg.validate().map_err(|e| invalid(S, e.to_string()))?;
        Ok(cfg)
    }
}
