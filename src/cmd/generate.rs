//! `brats-ldm generate`: make N synthetic volumes from a model blob, reproducibly, as files a
//! neuroimaging tool opens (NIfTI-1 with the model's geometry), with safe batch semantics for job
//! arrays and runs sharing a folder: per-volume claim files (one run makes each volume), files
//! written by temp + rename, complete outputs (gzip CRC checked) skipped on rerun, seed ranges split
//! by `--shard I/N`, a JSON-lines manifest with one line per volume, a volume with non-finite
//! values refused, the plan's memory printed and checked before it is allocated, optional PNG
//! previews and progress bars.
//! Also home of the argument helpers `bench` shares (model lookup, device, latent shape).

use crate::cmd::memory;
use crate::output::claim::{self, Acquired};
use crate::output::manifest::{self, ManifestEntry, Records};
use crate::output::nifti::{self, VolumeHeader};
use crate::output::shard::Shard;
use crate::output::volume::{self, Existing, Format};
use crate::output::{atomic, npy, preview};
use anyhow::{anyhow, bail, Context};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use ldm_runtime::{Device, Options, Precision, Progress, Runtime, Sampler};
use ldm_weights::{Blob, ModelConfig, SamplerKind};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// File name of the shipped default model, and where it lives in the source tree.
pub const DEFAULT_MODEL_FILE: &str = "brats-ldm-default.blob";
pub const DEFAULT_MODEL_DIR: &str = "weights/default";
/// Environment variable that points at a model blob when `--model` is not given.
pub const MODEL_ENV: &str = "BRATS_LDM_MODEL";

#[derive(clap::Args, Debug)]
#[command(about = "Generate synthetic volumes (NIfTI-1 .nii.gz by default) from a model blob")]
pub struct Args {
    /// Model blob. Default: $BRATS_LDM_MODEL, else the shipped weights/default/brats-ldm-default.blob
    /// found beside the executable or in the source tree.
    #[arg(long, value_name = "BLOB")]
    pub model: Option<PathBuf>,
    /// Output directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Number of volumes in the whole batch: seeds SEED..SEED+COUNT-1.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// First seed of the batch.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sampling steps (default: the model's, 50 for the bundle).
    #[arg(long)]
    pub steps: Option<usize>,
    /// ddim, ddpm or pndm (default: the model's), with the model's scheduler options.
    #[arg(long, value_name = "ddim|ddpm|pndm")]
    pub sampler: Option<String>,
    /// DDIM eta: 0 is deterministic given the initial noise (default 0).
    #[arg(long)]
    pub eta: Option<f32>,
    /// cpu, cuda or cuda:N (CUDA needs a build with `--features cuda` and an NVIDIA GPU).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, f16 or bf16 (reduced precision needs a CUDA device).
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Worker threads (default: all available cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// nii.gz, nii or npy.
    #[arg(long, default_value = "nii.gz")]
    pub format: String,
    /// Also write a PNG of the three central slices next to each volume.
    #[arg(long)]
    pub preview: bool,
    /// Generate only shard I of N (0-based) of the seed range, for job arrays.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Latent shape C,D,H,W (default: the model's; spatial sizes must divide by the UNet's
    /// downsampling factor).
    #[arg(long, value_name = "C,D,H,W")]
    pub latent_shape: Option<String>,
    /// Start from this initial latent (float32 .npy, [C,D,H,W] or [1,C,D,H,W]) instead of seeded
    /// noise; the latent shape comes from the file. A stochastic sampler (DDPM, DDIM with
    /// eta > 0) draws its step noise from --seed, as the run of that seed does.
    #[arg(long, value_name = "FILE.npy")]
    pub init_noise: Option<PathBuf>,
    /// Bound in bytes for the arena, workspaces and sampler state (weights excluded), e.g. 2GiB:
    /// the CPU decoder then works in depth slabs to fit (same result within 1e-6).
    #[arg(long, value_name = "BYTES")]
    pub max_memory: Option<String>,
    /// No plan line and no per-volume log lines when stderr is not a terminal.
    #[arg(long)]
    pub quiet: bool,
}

/// `--init-noise` values beyond this magnitude are not standard normal noise (|x| > 10 has
/// probability about 1.5e-23 per value) and are refused before sampling.
pub const INIT_NOISE_LIMIT: f32 = 10.0;

// ---------------------------------------------------------------------------------------------
// Argument helpers shared with `bench`.

/// Resolves `--model`, or finds the shipped default model.
pub fn resolve_model(arg: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = arg {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(MODEL_ENV) {
        return Ok(PathBuf::from(p));
    }
    let candidates = default_model_candidates();
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    bail!(
        "no --model given and the default model {DEFAULT_MODEL_DIR}/{DEFAULT_MODEL_FILE} was not found \
         (looked in: {}); the default model is made by `brats-ldm train` and shipped in the source tree's \
         {DEFAULT_MODEL_DIR}/; pass --model BLOB (e.g. a blob made by `brats-ldm convert`) or set {MODEL_ENV}",
        looked.join(", ")
    )
}

/// Where the shipped default model may be: beside the executable (installed layouts), above it
/// (a build inside a checkout: target/<profile>/brats-ldm), and in this crate's source tree.
pub fn default_model_candidates() -> Vec<PathBuf> {
    let rel = Path::new(DEFAULT_MODEL_DIR).join(DEFAULT_MODEL_FILE);
    let mut out = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push(dir.join(DEFAULT_MODEL_FILE));
        out.push(dir.join("../share/brats-ldm").join(DEFAULT_MODEL_FILE));
        for ancestor in dir.ancestors().take(4) {
            out.push(ancestor.join(&rel));
        }
    }
    out.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(&rel));
    let mut unique: Vec<PathBuf> = Vec::with_capacity(out.len());
    for p in out {
        if !unique.contains(&p) {
            unique.push(p);
        }
    }
    unique
}

/// Opens and validates a blob, naming the file in every error.
pub fn open_model(path: &Path) -> anyhow::Result<Blob> {
    Blob::open(path).with_context(|| format!("cannot load model {}", path.display()))
}

/// `cpu`, `cuda`, `cuda:N`.
pub fn parse_device(s: &str) -> anyhow::Result<Device> {
    let s = s.trim().to_ascii_lowercase();
    match s.as_str() {
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => Ok(Device::Cuda(0)),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(Device::Cuda(n)),
            _ => bail!("unknown --device '{s}': use cpu, cuda or cuda:N"),
        },
    }
}

pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
    }
}

pub fn parse_precision(s: &str) -> anyhow::Result<Precision> {
    match s.trim().to_ascii_lowercase().as_str() {
        "f32" | "fp32" | "float32" => Ok(Precision::F32),
        "f16" | "fp16" | "float16" => Ok(Precision::F16),
        "bf16" | "bfloat16" => Ok(Precision::Bf16),
        _ => bail!("unknown --precision '{s}': use f32, f16 or bf16"),
    }
}

/// `C,D,H,W` (commas or x).
pub fn parse_latent_shape(s: &str) -> anyhow::Result<[usize; 4]> {
    let parts: Vec<&str> = s.split([',', 'x']).map(str::trim).collect();
    let bad = || {
        anyhow!(
            "bad --latent-shape '{s}': expected four positive integers C,D,H,W, e.g. 8,36,44,28"
        )
    };
    if parts.len() != 4 {
        return Err(bad());
    }
    let mut out = [0usize; 4];
    for (o, p) in out.iter_mut().zip(&parts) {
        *o = p.parse().map_err(|_| bad())?;
        if *o == 0 {
            return Err(bad());
        }
    }
    Ok(out)
}

/// Checks a latent shape against the model before any work: channels must match the UNet's
/// input and every spatial size must divide by the UNet's total downsampling.
pub fn check_latent_shape(cfg: &ModelConfig, shape: [usize; 4]) -> anyhow::Result<()> {
    let Some(unet) = &cfg.unet else {
        bail!("the model has no diffusion UNet, so it cannot generate");
    };
    if cfg.decoder.is_none() {
        bail!("the model has no decoder, so it cannot generate images");
    }
    let [c, d, h, w] = shape;
    if c != unet.in_channels as usize {
        bail!(
            "latent shape {c},{d},{h},{w} has {c} channels but the model's UNet takes {}",
            unet.in_channels
        );
    }
    let levels = unet.num_channels.len().max(1);
    let factor = 1usize << (levels - 1).min(20);
    if [d, h, w].iter().any(|&n| n % factor != 0) {
        bail!(
            "latent shape {c},{d},{h},{w} is not usable: D, H and W must each be divisible by {factor} \
             (the UNet halves them {} times)",
            levels - 1
        );
    }
    Ok(())
}

/// The model's default sampler unless `--sampler`/`--eta` say otherwise.
pub fn choose_sampler(
    cfg: &ModelConfig,
    name: Option<&str>,
    eta: Option<f32>,
) -> anyhow::Result<Sampler> {
    let kind = match name.map(|s| s.trim().to_ascii_lowercase()) {
        None => cfg.scheduler.default_sampler,
        Some(s) if s == "ddim" => SamplerKind::Ddim,
        Some(s) if s == "ddpm" => SamplerKind::Ddpm,
        Some(s) if s == "pndm" => SamplerKind::Pndm,
        Some(s) => bail!("unknown --sampler '{s}': use ddim, ddpm or pndm"),
    };
    match (kind, eta) {
        (SamplerKind::Ddim, eta) => {
            let eta = eta.unwrap_or(0.0);
            if !eta.is_finite() || eta < 0.0 {
                bail!("bad --eta {eta}: must be a finite number >= 0");
            }
            Ok(Sampler::Ddim { eta })
        }
        (SamplerKind::Ddpm, None) => Ok(Sampler::Ddpm),
        (SamplerKind::Pndm, None) => Ok(Sampler::Pndm),
        (SamplerKind::Ddpm | SamplerKind::Pndm, Some(_)) => {
            bail!("--eta applies to the DDIM sampler only")
        }
    }
}

/// The sampler and step count are planned as the runtime will (MONAI's timestep list for any
/// step count, the model's scheduler options), so a bad combination is refused before any work.
pub fn check_steps(
    cfg: &ModelConfig,
    sampler: Sampler,
    steps: Option<usize>,
) -> anyhow::Result<()> {
    ldm_runtime::options::sampling_plan(cfg, Some(sampler), steps)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("--sampler {} --steps: {e}", sampler_name(sampler)))
}

pub fn sampler_name(s: Sampler) -> &'static str {
    match s {
        Sampler::Ddim { .. } => "ddim",
        Sampler::Ddpm => "ddpm",
        Sampler::Pndm => "pndm",
    }
}

/// Hex form of a blob checksum as recorded in manifests and headers.
pub fn checksum_hex(blob: &Blob) -> String {
    format!("{:016x}", blob.checksum())
}

// ---------------------------------------------------------------------------------------------
// generate

/// FNV-1a 64 of the initial latent's bytes: names an `--init-noise` run in the NIfTI header.
fn fnv1a(data: &[f32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in data {
        for b in v.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Where a volume's noise comes from.
#[derive(Clone, Copy)]
enum Noise<'a> {
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
    fn recorded_seed(self) -> Option<u64> {
        match self {
            Noise::Seed(seed) => Some(seed),
            Noise::Init { step_seed, .. } => step_seed,
        }
    }
}

/// One volume to produce.
struct Job<'a> {
    noise: Noise<'a>,
    volume_name: String,
    preview_name: Option<String>,
    header: VolumeHeader,
}

struct Bars {
    volumes: ProgressBar,
    steps: ProgressBar,
    /// Print plain per-volume lines instead (stderr is not a terminal).
    log_lines: bool,
}

impl Bars {
    fn new(total: u64, steps: u64, quiet: bool) -> Bars {
        let tty = std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if tty {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let volumes = multi.add(ProgressBar::new(total));
        volumes.set_style(
            ProgressStyle::with_template(
                "volumes {bar:30} {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let steps_bar = multi.add(ProgressBar::new(steps));
        steps_bar.set_style(
            ProgressStyle::with_template("  steps  {bar:30} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        volumes.tick();
        Bars {
            volumes,
            steps: steps_bar,
            log_lines: !tty && !quiet,
        }
    }

    fn log(&self, line: String) {
        if self.log_lines {
            eprintln!("{line}");
        } else {
            self.volumes.set_message(line);
        }
    }
}

/// What the cheap, model-independent arguments say.
struct Settings {
    shard: Shard,
    format: Format,
    device: Device,
    precision: Precision,
    latent_arg: Option<[usize; 4]>,
    max_memory: Option<usize>,
    /// `--init-noise`: the file, its latent shape and values.
    init: Option<(PathBuf, [usize; 4], Vec<f32>)>,
}

/// Checks every argument that needs no model, so that a typo never costs a model load.
fn parse_settings(args: &Args) -> anyhow::Result<Settings> {
    let shard = match &args.shard {
        Some(s) => Shard::parse(s)?,
        None => Shard::ALL,
    };
    let format = Format::parse(&args.format).map_err(|e| anyhow!(e))?;
    let device = parse_device(&args.device)?;
    let precision = parse_precision(&args.precision)?;
    let latent_arg = args
        .latent_shape
        .as_deref()
        .map(parse_latent_shape)
        .transpose()?;
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    if args.seed.checked_add(args.count - 1).is_none() {
        bail!(
            "seed range {}..{}+{} overflows 64 bits",
            args.seed,
            args.seed,
            args.count
        );
    }
    if args.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    let max_memory = args
        .max_memory
        .as_deref()
        .map(memory::parse_max_memory)
        .transpose()?;
    if args.steps == Some(0) {
        bail!("--steps must be at least 1");
    }
    let init = match &args.init_noise {
        None => None,
        Some(path) => {
            if args.count != 1 || args.shard.is_some() {
                bail!(
                    "--init-noise gives one initial latent: use it with --count 1 and no --shard"
                );
            }
            let (shape, data) = read_init_noise(path)?;
            Some((path.clone(), shape, data))
        }
    };
    Ok(Settings {
        shard,
        format,
        device,
        precision,
        latent_arg,
        max_memory,
        init,
    })
}

/// File-name stem of an `--init-noise` run: the noise file's name, restricted to safe characters.
fn init_stem(path: &Path) -> String {
    let stem = path
        .file_name()
        .and_then(|s| s.to_str())
        .map(|s| s.trim_end_matches(".npy").to_string())
        .unwrap_or_default();
    let stem: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.is_empty() {
        "noise".into()
    } else {
        stem
    }
}

/// The state of one batch run: where files go, what the folder's manifests already record, and
/// how each volume is described.
struct Batch<'a> {
    out: &'a Path,
    format: Format,
    manifest_path: PathBuf,
    records: Records,
    stale: HashMap<String, Vec<PathBuf>>,
    /// Manifest fields shared by every volume of the run (file, seed, seconds filled per volume).
    template: ManifestEntry,
    out_shape: [usize; 4],
    steps: usize,
    bars: Bars,
    made: usize,
    skipped: usize,
    /// Volumes another live run was making when this one reached them.
    busy: Vec<String>,
    /// Volumes that came out with non-finite values (not written).
    failed: Vec<String>,
}

/// What became of one job.
enum Outcome {
    Made,
    Skipped,
    /// Another run holds the volume's claim.
    Busy,
    /// Not written: the reason.
    Failed(String),
}

impl Batch<'_> {
    fn entry(&self, job: &Job, seconds: Option<f64>) -> ManifestEntry {
        ManifestEntry {
            file: job.volume_name.clone(),
            seed: job.noise.recorded_seed(),
            seconds,
            ..self.template.clone()
        }
    }

    /// One job under its claim: skip it when another run holds it, else check what exists,
    /// then make it if needed; the claim is released whatever happens.
    fn run_job(&mut self, job: &Job, rt: &mut Runtime, volume: &mut [f32]) -> anyhow::Result<()> {
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
    fn record(&mut self, entry: &ManifestEntry) -> anyhow::Result<()> {
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

    /// Generates one volume into `volume` and writes preview, volume and manifest line, in
    /// that order (the volume's final name appears only once its preview exists). A volume with
    /// a non-finite value is not written; nor is one whose claim another run took meanwhile.
    fn produce(
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
        check_latent_shape(&cfg, latent_shape)
            .with_context(|| format!("--init-noise {} does not fit the model", path.display()))?;
    } else {
        check_latent_shape(&cfg, latent_shape)?;
    }
    let sampler = choose_sampler(&cfg, args.sampler.as_deref(), args.eta)?;
    check_steps(&cfg, sampler, args.steps)?;
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
        _ => format!("{}{steps}", sampler_name(sampler)),
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

    // Jobs are produced lazily: a batch of any size costs no memory up front.
    let ext = settings.format.extension();
    let preview = args.preview;
    let (total, jobs): (u64, Box<dyn Iterator<Item = Job> + '_>) = match &settings.init {
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
    };

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
            sampler: sampler_name(sampler).to_string(),
            eta: match sampler {
                Sampler::Ddim { eta } => Some(eta),
                Sampler::Ddpm | Sampler::Pndm => None,
            },
            steps,
            device: device_name(settings.device),
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

/// Plans the runtime, prints the plan's bytes (`announce`), refuses a plan that cannot fit in
/// the memory available, then allocates it.
pub fn plan_and_allocate(
    blob: &Blob,
    options: Options,
    model_path: &Path,
    announce: bool,
) -> anyhow::Result<Runtime> {
    let cpu = options.device == Device::Cpu;
    let planned = Runtime::plan_for(blob, options)
        .with_context(|| format!("cannot prepare model {} to run", model_path.display()))?;
    let volume_bytes = planned.output_shape().iter().product::<usize>() as u64 * 4;
    let available = memory::available();
    if announce {
        let mut line = memory::describe(planned.report(), volume_bytes);
        if let Some(a) = available.as_ref().filter(|_| cpu) {
            line.push_str(&format!("; {} available", memory::gib(a.bytes)));
        }
        eprintln!("{line}");
    }
    if cpu {
        memory::check_fits(planned.report(), volume_bytes, available.as_ref())?;
    }
    planned
        .allocate()
        .with_context(|| format!("cannot prepare model {} to run", model_path.display()))
}

/// Whether a manifest entry describes the same volume as `ours` (timing aside).
fn same_settings(found: &ManifestEntry, ours: &ManifestEntry) -> bool {
    found.seed == ours.seed
        && found.model_checksum == ours.model_checksum
        && found.sampler == ours.sampler
        && found.eta == ours.eta
        && found.steps == ours.steps
}

/// Reads `--init-noise`: float32 `[C,D,H,W]` or `[1,C,D,H,W]`, all values finite.
fn read_init_noise(path: &Path) -> anyhow::Result<([usize; 4], Vec<f32>)> {
    let a = npy::read_f32(path).context("cannot read --init-noise")?;
    let shape: [usize; 4] = match a.shape.as_slice() {
        [c, d, h, w] | [1, c, d, h, w] => [*c, *d, *h, *w],
        other => bail!(
            "--init-noise {}: shape {other:?} is not a latent: expected [C, D, H, W] or [1, C, D, H, W]",
            path.display()
        ),
    };
    if shape.contains(&0) {
        bail!(
            "--init-noise {}: shape {:?} has an empty dimension",
            path.display(),
            a.shape
        );
    }
    if let Some(i) = a.data.iter().position(|v| !v.is_finite()) {
        bail!(
            "--init-noise {}: value {i} is not finite ({})",
            path.display(),
            a.data[i]
        );
    }
    if let Some(i) = a.data.iter().position(|v| v.abs() > INIT_NOISE_LIMIT) {
        bail!(
            "--init-noise {}: value {i} is {:e}, far outside standard normal noise (|x| <= {INIT_NOISE_LIMIT})",
            path.display(),
            a.data[i]
        );
    }
    Ok((shape, a.data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_shapes_and_precisions() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert_eq!(parse_device("CUDA").unwrap(), Device::Cuda(0));
        assert_eq!(parse_device("cuda:3").unwrap(), Device::Cuda(3));
        assert!(parse_device("tpu").is_err());
        assert!(parse_device("cuda:x").is_err());
        assert_eq!(parse_latent_shape("8,36,44,28").unwrap(), [8, 36, 44, 28]);
        assert_eq!(parse_latent_shape("8x4x4x4").unwrap(), [8, 4, 4, 4]);
        for bad in ["8,36,44", "8,0,4,4", "a,b,c,d", "", "8,4,4,4,4"] {
            assert!(parse_latent_shape(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_precision("bf16").unwrap(), Precision::Bf16);
        assert!(parse_precision("f64").is_err());
    }

    fn tiny_config() -> ModelConfig {
        ModelConfig {
            decoder: Some(ldm_weights::DecoderConfig::bundle()),
            encoder: None,
            unet: Some(ldm_weights::UnetConfig::bundle()),
            scheduler: ldm_weights::SchedulerConfig::bundle(),
            scale_factor: 1.0,
            latent_shape: [8, 36, 44, 28],
            geometry: ldm_weights::OutputGeometry::bundle(),
            provenance: Default::default(),
        }
    }

    #[test]
    fn latent_shapes_are_checked_against_the_unet() {
        let cfg = tiny_config();
        assert!(check_latent_shape(&cfg, [8, 36, 44, 28]).is_ok());
        let e = check_latent_shape(&cfg, [8, 35, 44, 28])
            .unwrap_err()
            .to_string();
        assert!(e.contains("divisible by 4"), "{e}");
        let e = check_latent_shape(&cfg, [4, 36, 44, 28])
            .unwrap_err()
            .to_string();
        assert!(e.contains("channels"), "{e}");
        let mut no_unet = cfg.clone();
        no_unet.unet = None;
        assert!(check_latent_shape(&no_unet, [8, 36, 44, 28]).is_err());
    }

    #[test]
    fn sampler_defaults_and_conflicts() {
        let cfg = tiny_config();
        assert_eq!(
            choose_sampler(&cfg, None, None).unwrap(),
            Sampler::Ddim { eta: 0.0 }
        );
        assert_eq!(
            choose_sampler(&cfg, Some("ddim"), Some(0.5)).unwrap(),
            Sampler::Ddim { eta: 0.5 }
        );
        assert_eq!(
            choose_sampler(&cfg, Some("DDPM"), None).unwrap(),
            Sampler::Ddpm
        );
        assert!(choose_sampler(&cfg, Some("ddpm"), Some(0.5)).is_err());
        assert!(choose_sampler(&cfg, Some("euler"), None).is_err());
        assert!(choose_sampler(&cfg, None, Some(-1.0)).is_err());
        assert_eq!(
            choose_sampler(&cfg, Some("pndm"), None).unwrap(),
            Sampler::Pndm
        );
        assert!(choose_sampler(&cfg, Some("pndm"), Some(0.5)).is_err());
        assert!(
            check_steps(&cfg, Sampler::Ddpm, Some(10)).is_ok(),
            "MONAI's DDPM takes any step count"
        );
        assert!(check_steps(&cfg, Sampler::Ddpm, Some(1001)).is_err());
        assert!(
            check_steps(&cfg, Sampler::Pndm, Some(3)).is_err(),
            "the Runge-Kutta warm-up needs 4 steps"
        );
        assert!(check_steps(&cfg, Sampler::Ddpm, Some(1000)).is_ok());
        assert!(check_steps(&cfg, Sampler::Ddpm, None).is_ok());
        assert!(check_steps(&cfg, Sampler::Ddim { eta: 0.0 }, Some(10)).is_ok());
    }

    #[test]
    fn explicit_model_wins_and_missing_default_says_where_it_comes_from() {
        let p = resolve_model(Some(Path::new("/x/m.blob"))).unwrap();
        assert_eq!(p, PathBuf::from("/x/m.blob"));
        let candidates = default_model_candidates();
        assert!(candidates
            .iter()
            .any(|c| c.ends_with("weights/default/brats-ldm-default.blob")));
    }

    #[test]
    fn init_noise_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, shape: &[usize], data: &[f32]| {
            let p = dir.path().join(name);
            let mut bytes = Vec::new();
            npy::write_f32(&mut bytes, shape, data).unwrap();
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let ok = write("a.npy", &[1, 2, 2, 2, 2], &[0.5; 16]);
        assert_eq!(read_init_noise(&ok).unwrap().0, [2, 2, 2, 2]);
        let three = write("b.npy", &[2, 2, 4], &[0.5; 16]);
        assert!(read_init_noise(&three).is_err());
        let batch2 = write("c.npy", &[2, 1, 2, 2, 2], &[0.5; 16]);
        assert!(read_init_noise(&batch2).is_err());
        let mut nan = vec![0.0; 16];
        nan[3] = f32::NAN;
        let nan = write("d.npy", &[1, 2, 2, 2, 2], &nan);
        assert!(read_init_noise(&nan)
            .unwrap_err()
            .to_string()
            .contains("value 3"));
        let mut huge = vec![0.0; 16];
        huge[5] = 1e37;
        let huge = write("e.npy", &[1, 2, 2, 2, 2], &huge);
        let e = read_init_noise(&huge).unwrap_err().to_string();
        assert!(e.contains("value 5") && e.contains("1e37"), "{e}");
        let edge = write("f.npy", &[1, 2, 2, 2, 2], &[-INIT_NOISE_LIMIT; 16]);
        assert!(read_init_noise(&edge).is_ok());
        let real =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/monai/pipeline/noise.npy");
        assert_eq!(read_init_noise(&real).unwrap().0, [8, 8, 8, 4]);
        assert_ne!(fnv1a(&[1.0]), fnv1a(&[2.0]));
        assert_eq!(init_stem(Path::new("/a/noise.npy")), "noise");
        assert_eq!(init_stem(Path::new("my noise (2).npy")), "my_noise__2_");
        assert_eq!(init_stem(Path::new("/")), "noise");
    }
}
