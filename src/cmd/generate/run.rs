//! The `generate` command from start to end: the arguments checked (cheap ones first), the model
//! opened and the latent shape, sampler and steps checked against it, the output folder made
//! writable, the runtime planned and allocated, every job run under its claim, then the summary
//! line; on failure the output folders this run created are removed again while empty.

use super::batch::Batch;
use super::jobs::job_list;
use super::model::{checksum_hex, open_model, resolve_model};
use super::plan::plan_and_allocate;
use super::progress::Bars;
use super::settings::parse_settings;
use super::Args;
use crate::cmd::memory;
use crate::output::atomic;
use crate::output::manifest::{self, ManifestEntry, Records};
use crate::output::nifti::{self, VolumeHeader};
use anyhow::{bail, Context};
use ldm_runtime::arguments::{self, Spelling};
use ldm_runtime::{Options, Sampler};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// `generate`: on failure, also removes the output directory (and parents) it created when
/// they are still empty.
pub fn run(args: Args) -> anyhow::Result<()> {
    let created = first_missing_ancestor(&args.out);
    let result = run_batch(&args);
    if let (Err(_), Some(top)) = (&result, &created) {
        for dir in args.out.ancestors() {
            // remove_dir removes empty directories only
            if std::fs::remove_dir(dir).is_err() || dir == top.as_path() {
                break;
            }
        }
    }
    result
}

/// The outermost directory of `dir`'s path that does not exist yet (None: `dir` exists).
fn first_missing_ancestor(dir: &Path) -> Option<PathBuf> {
    let mut top = None;
    for a in dir.ancestors() {
        if a.as_os_str().is_empty() || a.exists() {
            break;
        }
        top = Some(a.to_path_buf());
    }
    top
}

/// The whole command; `run` adds the clean-up on failure.
fn run_batch(args: &Args) -> anyhow::Result<()> {
    let settings = parse_settings(args)?;
    let model_path = resolve_model(args.model.as_deref())?;
    let blob = open_model(&model_path)?;
    let cfg = blob.config().clone();
    let latent_shape = match (&settings.init, settings.latent_arg) {
        (Some((path, shape, _)), Some(arg)) if *shape != arg => bail!(
            "--latent-shape {arg:?} contradicts the shape {shape:?} of --init-noise {}",
            path.display()
        ),
        (Some((_, shape, _)), _) => *shape,
        (None, Some(arg)) => arg,
        (None, None) => cfg.latent_shape.map(|n| n as usize),
    };
    if let Some((path, _, _)) = &settings.init {
        arguments::check_latent_shape(&cfg, latent_shape)
            .with_context(|| format!("--init-noise {} does not fit the model", path.display()))?;
    } else {
        arguments::check_latent_shape(&cfg, latent_shape)?;
    }
    let sampler =
        arguments::choose_sampler(&cfg, args.sampler.as_deref(), args.eta, Spelling::Cli)?;
    arguments::check_steps(&cfg, sampler, args.steps, Spelling::Cli)?;
    let geometry = cfg.geometry.clone();
    nifti::affine(&geometry.orientation, geometry.spacing_mm, [1, 1, 1]).with_context(|| {
        format!(
            "model {} has an unusable output geometry",
            model_path.display()
        )
    })?;
    atomic::ensure_writable_dir(&args.out)
        .with_context(|| format!("cannot write to output directory {}", args.out.display()))?;

    let options = Options {
        device: settings.device,
        precision: settings.precision,
        batch: 1,
        latent_shape: Some(latent_shape),
        steps: args.steps,
        sampler: Some(sampler),
        threads: args.threads,
        max_memory: settings.max_memory,
    };
    let mut rt = plan_and_allocate(&blob, options, &model_path, !args.quiet)?;
    let steps = rt.timesteps().len();
    let out_shape = rt.output_shape();
    let checksum = checksum_hex(&blob);
    let sampler_tag = match sampler {
        Sampler::Ddim { eta } if eta != 0.0 => format!("ddim{steps} eta={eta}"),
        _ => format!("{}{steps}", arguments::sampler_name(sampler)),
    };
    let header_for = |id: &str| VolumeHeader {
        shape: out_shape,
        spacing_mm: geometry.spacing_mm,
        orientation: geometry.orientation.clone(),
        descrip: format!(
            "{id} model={} {sampler_tag}",
            &checksum[..checksum.len().min(16)]
        ),
    };

    let (total, jobs) = job_list(&settings, args, sampler, header_for);

    let manifest_path = args
        .out
        .join(manifest::file_name(&settings.shard.file_tag()));
    let records = Records::load(&args.out)
        .with_context(|| format!("cannot read the manifests in {}", args.out.display()))?;
    let stale = atomic::stale_temps(&args.out)
        .with_context(|| format!("cannot list output directory {}", args.out.display()))?;
    let mut batch = Batch {
        out: &args.out,
        format: settings.format,
        manifest_path,
        records,
        stale,
        template: ManifestEntry {
            file: String::new(),
            seed: None,
            init_noise: settings
                .init
                .as_ref()
                .map(|(p, _, _)| p.display().to_string()),
            model_checksum: checksum.clone(),
            sampler: arguments::sampler_name(sampler).to_string(),
            eta: match sampler {
                Sampler::Ddim { eta } => Some(eta),
                Sampler::Ddpm | Sampler::Pndm => None,
            },
            steps,
            device: arguments::device_name(settings.device),
            seconds: None,
        },
        out_shape,
        steps,
        bars: Bars::new(total, steps as u64 + 1, args.quiet),
        made: 0,
        skipped: 0,
        busy: Vec::new(),
        failed: Vec::new(),
    };
    let mut volume = memory::try_zeroed(out_shape.iter().product(), "output volume")?;
    for job in jobs {
        batch.run_job(&job, &mut rt, &mut volume)?;
    }
    batch.bars.steps.finish_and_clear();
    batch.bars.volumes.finish_and_clear();
    if batch.bars.log_lines || std::io::stderr().is_terminal() {
        let busy = if batch.busy.is_empty() {
            String::new()
        } else {
            format!(", {} being made by other runs", batch.busy.len())
        };
        eprintln!(
            "{} written, {} already complete{busy}, in {} (manifest: {})",
            batch.made,
            batch.skipped,
            args.out.display(),
            batch.manifest_path.display()
        );
    }
    if !batch.failed.is_empty() {
        bail!(
            "{} of {total} volumes had non-finite values and were not written: {}",
            batch.failed.len(),
            list_names(&batch.failed, 10)
        );
    }
    Ok(())
}

/// "a, b, c and 7 more".
fn list_names(names: &[String], show: usize) -> String {
    let mut s = names
        .iter()
        .take(show)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > show {
        s.push_str(&format!(" and {} more", names.len() - show));
    }
    s
}
