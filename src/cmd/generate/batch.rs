//! The state of one `generate` batch and what happens to each job under its claim file: another
//! live run's volume skipped, stale temporary files removed, a complete output (gzip CRC
//! checked) recorded and skipped, otherwise the volume made (`produce`); and the manifest lines,
//! appended once per volume and checked against what the folder's manifests already record.

use super::jobs::Job;
use super::progress::Bars;
use crate::output::claim::{self, Acquired};
use crate::output::manifest::{self, ManifestEntry, Records};
use crate::output::volume::{self, Existing, Format};
use anyhow::{bail, Context};
use ldm_runtime::Runtime;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The state of one batch run: where files go, what the folder's manifests already record, and
/// how each volume is described.
pub(super) struct Batch<'a> {
    pub(super) out: &'a Path,
    pub(super) format: Format,
    pub(super) manifest_path: PathBuf,
    pub(super) records: Records,
    pub(super) stale: HashMap<String, Vec<PathBuf>>,
    /// Manifest fields shared by every volume of the run (file, seed, seconds filled per volume).
    pub(super) template: ManifestEntry,
    pub(super) out_shape: [usize; 4],
    pub(super) steps: usize,
    pub(super) bars: Bars,
    pub(super) made: usize,
    pub(super) skipped: usize,
    /// Volumes another live run was making when this one reached them.
    pub(super) busy: Vec<String>,
    /// Volumes that came out with non-finite values (not written).
    pub(super) failed: Vec<String>,
}

/// What became of one job.
pub(super) enum Outcome {
    Made,
    Skipped,
    /// Another run holds the volume's claim.
    Busy,
    /// Not written: the reason.
    Failed(String),
}

impl Batch<'_> {
    pub(super) fn entry(&self, job: &Job, seconds: Option<f64>) -> ManifestEntry {
        ManifestEntry {
            file: job.volume_name.clone(),
            seed: job.noise.recorded_seed(),
            seconds,
            ..self.template.clone()
        }
    }

    /// One job under its claim: skip it when another run holds it, else check what exists,
    /// then make it if needed; the claim is released whatever happens.
    pub(super) fn run_job(
        &mut self,
        job: &Job,
        rt: &mut Runtime,
        volume: &mut [f32],
    ) -> anyhow::Result<()> {
        let claim = match claim::acquire(self.out, &job.volume_name).with_context(|| {
            format!("cannot claim {} in {}", job.volume_name, self.out.display())
        })? {
            Acquired::Owned(c) => c,
            Acquired::Busy(holder) => {
                let who = holder.map_or_else(|| "another run".to_string(), |h| h.describe());
                self.bars.log(format!(
                    "{} is being made by {who}: skipped",
                    job.volume_name
                ));
                return self.finish(job, Outcome::Busy);
            }
        };
        if let Some(dead) = &claim.took_over {
            self.bars.log(format!(
                "{}: taking over the claim of {dead} (no longer running)",
                job.volume_name
            ));
        }
        self.clean_stale(job)?;
        let outcome = if self.already_done(job)? {
            Outcome::Skipped
        } else {
            self.produce(job, rt, volume, &claim)?
        };
        claim.release();
        self.finish(job, outcome)
    }

    fn finish(&mut self, job: &Job, outcome: Outcome) -> anyhow::Result<()> {
        match outcome {
            Outcome::Made => self.made += 1,
            Outcome::Skipped => {
                self.skipped += 1;
                self.bars
                    .log(format!("{} complete, skipped", job.volume_name));
            }
            Outcome::Busy => self.busy.push(job.volume_name.clone()),
            Outcome::Failed(why) => {
                self.bars.log(format!("{}: {why}", job.volume_name));
                self.failed.push(job.volume_name.clone());
            }
        }
        self.bars.volumes.inc(1);
        Ok(())
    }

    /// Removes temporary files an interrupted run left for this job (never other shards'; only
    /// called under the job's claim, so never a live run's).
    fn clean_stale(&mut self, job: &Job) -> anyhow::Result<()> {
        for name in std::iter::once(&job.volume_name).chain(job.preview_name.as_ref()) {
            for tmp in self.stale.remove(name.as_str()).unwrap_or_default() {
                match std::fs::remove_file(&tmp) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| {
                            format!("cannot remove stale temporary file {}", tmp.display())
                        })
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Appends the job's manifest line unless a manifest of the folder already records the
    /// volume with these settings. The manifests read so far are brought up to date first; only
    /// when they do not record it is the folder listed again (another run's manifest may have
    /// appeared), so a resumed batch costs no directory scan per volume.
    pub(super) fn record(&mut self, entry: &ManifestEntry) -> anyhow::Result<()> {
        for rescan in [false, true] {
            self.records
                .refresh(rescan)
                .with_context(|| format!("cannot read the manifests in {}", self.out.display()))?;
            if matches!(self.records.get(&entry.file), Some(found) if same_settings(found, entry)) {
                return Ok(());
            }
        }
        manifest::append(&self.manifest_path, entry)
            .with_context(|| format!("cannot append to {}", self.manifest_path.display()))?;
        self.records
            .refresh(false)
            .with_context(|| format!("cannot read {}", self.manifest_path.display()))
    }

    /// True when the job's outputs already exist complete (then recorded and skipped). A
    /// `.nii.gz` is complete only when its whole gzip stream inflates to the expected size with
    /// a correct CRC-32.
    fn already_done(&mut self, job: &Job) -> anyhow::Result<bool> {
        let volume_path = self.out.join(&job.volume_name);
        let preview_ok = match &job.preview_name {
            Some(p) => self.out.join(p).is_file(),
            None => true,
        };
        let mut state = volume::check_existing(&volume_path, self.format, &job.header);
        if state == Existing::Complete && self.format == Format::NiiGz {
            let want = volume::expected_bytes(self.format, &job.header);
            match ldm_io::gzip::verify(&volume_path, Some(want)) {
                Ok(n) if n == want => {}
                Ok(n) => {
                    state = Existing::Incomplete(format!("inflates to {n} bytes, expected {want}"))
                }
                Err(e) => state = Existing::Incomplete(e.to_string()),
            }
        }
        match state {
            Existing::Complete if preview_ok => {
                let ours = self.entry(job, None);
                self.records
                    .refresh(false)
                    .with_context(|| format!("cannot read {}", self.manifest_path.display()))?;
                if let Some(found) = self.records.get(&job.volume_name) {
                    if !same_settings(found, &ours) {
                        bail!(
                            "{} exists but the manifest records other settings for it (model {}, {} {} steps); remove it or \
                             choose another --out",
                            volume_path.display(),
                            found.model_checksum,
                            found.sampler,
                            found.steps
                        );
                    }
                }
                self.record(&ours)?;
                Ok(true)
            }
            Existing::Different { found } => bail!(
                "{} exists but was made with other settings (its header says '{found}', this run would write \
                 '{}'); remove it or choose another --out",
                volume_path.display(),
                job.header.descrip
            ),
            Existing::Incomplete(why) => {
                self.bars.log(format!("{} is incomplete ({why}): regenerating", job.volume_name));
                Ok(false)
            }
            Existing::Missing | Existing::Complete => Ok(false),
        }
    }
}

/// Whether a manifest entry describes the same volume as `ours` (timing aside).
fn same_settings(found: &ManifestEntry, ours: &ManifestEntry) -> bool {
    found.seed == ours.seed
        && found.model_checksum == ours.model_checksum
        && found.sampler == ours.sampler
        && found.eta == ours.eta
        && found.steps == ours.steps
}
