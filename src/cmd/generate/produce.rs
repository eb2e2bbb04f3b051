//! Making one volume of a `generate` batch: sampled and decoded by the runtime with the job's
//! noise, refused when a value is not finite or another run took its claim meanwhile, then its
//! preview, the volume and its manifest line written in that order.

use super::batch::{Batch, Outcome};
use super::jobs::{Job, Noise};
use crate::output::claim;
use crate::output::{atomic, preview, volume};
use anyhow::Context;
use ldm_runtime::{Progress, Runtime};
use std::time::Instant;

impl Batch<'_> {
    /// Generates one volume into `volume` and writes preview, volume and manifest line, in
    /// that order (the volume's final name appears only once its preview exists). A volume with
    /// a non-finite value is not written; nor is one whose claim another run took meanwhile.
    pub(super) fn produce(
        &mut self,
        job: &Job,
        rt: &mut Runtime,
        volume: &mut [f32],
        claim: &claim::Claim,
    ) -> anyhow::Result<Outcome> {
        let started = Instant::now();
        let steps_bar = &self.bars.steps;
        steps_bar.reset();
        steps_bar.set_message(job.volume_name.clone());
        let mut on_progress = |p: Progress| match p {
            Progress::Step { index, .. } => steps_bar.set_position(index as u64 + 1),
            Progress::Decoding => steps_bar.set_message(format!("{} decoding", job.volume_name)),
        };
        let result = match job.noise {
            Noise::Seed(seed) => rt.generate(seed, volume, &mut on_progress),
            Noise::Init { latent, step_seed } => rt.generate_from_noise_seeded(
                latent,
                step_seed.unwrap_or(0),
                volume,
                &mut on_progress,
            ),
        };
        result.with_context(|| format!("generating {} failed", job.volume_name))?;
        steps_bar.set_position(self.steps as u64 + 1);
        let bad = volume.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            let first = volume.iter().position(|v| !v.is_finite()).unwrap_or(0);
            return Ok(Outcome::Failed(format!(
                "{bad} of {} values are not finite (the first, at index {first}, is {}): not written",
                volume.len(),
                volume[first]
            )));
        }
        if !claim.still_ours() {
            self.bars.log(format!(
                "{}: another run took over its claim meanwhile; not written by this run",
                job.volume_name
            ));
            return Ok(Outcome::Busy);
        }

        if let Some(name) = &job.preview_name {
            let shape = self.out_shape;
            atomic::write_atomic(self.out, name, |w| {
                preview::write_png(w, shape, volume).map_err(std::io::Error::other)
            })
            .with_context(|| format!("cannot write {}", self.out.join(name).display()))?;
        }
        let volume_path =
            volume::write(self.out, &job.volume_name, self.format, &job.header, volume)
                .with_context(|| {
                    format!("cannot write {}", self.out.join(&job.volume_name).display())
                })?;
        let seconds = started.elapsed().as_secs_f64();
        let entry = self.entry(job, Some(seconds));
        self.record(&entry)?;
        self.bars
            .log(format!("wrote {} ({seconds:.1} s)", volume_path.display()));
        Ok(Outcome::Made)
    }
}
