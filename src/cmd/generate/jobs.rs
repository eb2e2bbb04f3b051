//! The volumes a `generate` run makes: one per seed of its shard of the seed range, or the one
//! of `--init-noise`, each with its noise, output names and NIfTI header, produced lazily so that
//! a batch of any size costs no memory up front.

use super::init_noise::{fnv1a, init_stem};
use super::settings::Settings;
use super::Args;
use crate::output::nifti::VolumeHeader;
use ldm_runtime::Sampler;

/// Where a volume's noise comes from.
#[derive(Clone, Copy)]
pub(super) enum Noise<'a> {
    /// Initial and step noise from this seed's Philox stream.
    Seed(u64),
    /// The `--init-noise` latent; a stochastic sampler (DDPM, DDIM with eta > 0) draws its step
    /// noise from `step_seed` (`--seed`), a deterministic one has none (None).
    Init {
        latent: &'a [f32],
        step_seed: Option<u64>,
    },
}

impl Noise<'_> {
    /// The seed recorded in the manifest: the one that, with the settings, decides the volume.
    pub(super) fn recorded_seed(self) -> Option<u64> {
        match self {
            Noise::Seed(seed) => Some(seed),
            Noise::Init { step_seed, .. } => step_seed,
        }
    }
}

/// One volume to produce.
pub(super) struct Job<'a> {
    pub(super) noise: Noise<'a>,
    pub(super) volume_name: String,
    pub(super) preview_name: Option<String>,
    pub(super) header: VolumeHeader,
}

/// The run's jobs and their number; `header_for` makes a volume's header from its id
/// (`seed=S`, or `init=FINGERPRINT` with the step seed of a stochastic sampler).
pub(super) fn job_list<'a>(
    settings: &'a Settings,
    args: &Args,
    sampler: Sampler,
    header_for: impl Fn(&str) -> VolumeHeader + 'a,
) -> (u64, Box<dyn Iterator<Item = Job<'a>> + 'a>) {
    let ext = settings.format.extension();
    let preview = args.preview;
    match &settings.init {
        Some((path, _, data)) => {
            let stem = init_stem(path);
            let step_seed = sampler.is_stochastic().then_some(args.seed);
            let id = match step_seed {
                Some(seed) => format!("init={:016x} seed={seed}", fnv1a(data)),
                None => format!("init={:016x}", fnv1a(data)),
            };
            let job = Job {
                noise: Noise::Init {
                    latent: data,
                    step_seed,
                },
                volume_name: format!("init-{stem}.{ext}"),
                preview_name: preview.then(|| format!("init-{stem}.png")),
                header: header_for(&id),
            };
            (1, Box::new(std::iter::once(job)))
        }
        None => {
            let range = settings.shard.range(args.count);
            let first = args.seed;
            let jobs = range.clone().map(move |k| {
                let seed = first + k;
                Job {
                    noise: Noise::Seed(seed),
                    volume_name: format!("seed-{seed:06}.{ext}"),
                    preview_name: preview.then(|| format!("seed-{seed:06}.png")),
                    header: header_for(&format!("seed={seed}")),
                }
            });
            (range.end - range.start, Box::new(jobs))
        }
    }
}
