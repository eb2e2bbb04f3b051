//! `brats-ldm convert`: a MONAI bundle directory, or MONAI checkpoints (`.pt` zip+pickle or
//! `.safetensors`, generative 0.2.x or monai >= 1.4 key names) with a config or preset -> one
//! frozen weight blob, without Python. The flags of
//! `ldm_import::convert`, which does the work.

use std::io::Write;
use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, ValueEnum};
use ldm_import::convert::{convert_to_file, ArchitectureSource, ConvertOptions};
use ldm_weights::DType;

/// Print a status line; a closed stdout must not abort a conversion.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// A MONAI bundle directory as it ships: the architecture, scheduler and number of steps
    /// from configs/inference.json (and the training configs), the checkpoints from models/.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with_all = ["config", "preset"],
        required_unless_present_any = ["config", "preset"]
    )]
    pub bundle: Option<PathBuf>,
    /// The autoencoder checkpoint (the bundle's model_autoencoder.pt, or .safetensors); with
    /// --bundle, replaces the bundle's own.
    #[arg(long, value_name = "FILE")]
    pub autoencoder: Option<PathBuf>,
    /// The diffusion UNet checkpoint (the bundle's model.pt, or .safetensors); with --bundle,
    /// replaces the bundle's own.
    #[arg(long, value_name = "FILE")]
    pub unet: Option<PathBuf>,
    /// Architecture from a MONAI bundle config file (configs/inference.json, resolved as MONAI
    /// does), or from a JSON file mirroring its sections (`autoencoder_def`, `network_def`,
    /// optional `noise_scheduler`, `latent_shape`, `scale_factor`).
    #[arg(long, value_name = "FILE", conflicts_with = "preset")]
    pub config: Option<PathBuf>,
    /// A built-in architecture.
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// Storage type of the blob's tensors.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DtypeArg,
    /// Latents are divided by this before decoding. The bundle's own sampler does not divide:
    /// 1.0 (the default unless the config file sets one).
    #[arg(long)]
    pub scale_factor: Option<f32>,
    /// Default latent shape C,D,H,W (default: the config's, else the bundle's 36,44,28 grid).
    #[arg(long, value_name = "C,D,H,W", value_parser = parse_latent_shape)]
    pub latent_shape: Option<[u32; 4]>,
    /// Read the state dict from this entry of a checkpoint that nests it (e.g. `state_dict`);
    /// for safetensors, keep the tensors named `NAME.*`.
    #[arg(long, value_name = "NAME")]
    pub key: Option<String>,
    /// The UNet's attention applies its output projection (`proj_attn`, monai >= 1.4
    /// `attn.out_proj` with include_fc=True). Off for bundle checkpoints: generative 0.2.3 never
    /// applies it.
    #[arg(long)]
    pub attention_output_projection: bool,
    /// Store only the autoencoder's decoder side (drop encoder and quant_conv_* tensors).
    #[arg(long)]
    pub decoder_only: bool,
    /// Where to write the blob (written to a temporary file, then renamed).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Preset {
    /// MONAI's "BraTS MRI 3D latent diffusion" bundle: latent 8 x 36 x 44 x 28, UNet channels
    /// [256, 256, 512] (every release on the model zoo).
    Bundle,
    /// The bundle's 4-channel layout: latent 4 x 48 x 48 x 32, UNet channels [128, 256, 512],
    /// head channels [0, 32, 32].
    BundleLatent4,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DtypeArg {
    F32,
    F16,
    Bf16,
}

impl From<DtypeArg> for DType {
    fn from(d: DtypeArg) -> DType {
        match d {
            DtypeArg::F32 => DType::F32,
            DtypeArg::F16 => DType::F16,
            DtypeArg::Bf16 => DType::BF16,
        }
    }
}

fn parse_latent_shape(s: &str) -> Result<[u32; 4], String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if parts.len() != 4 {
        return Err(format!(
            "expected 4 comma-separated sizes C,D,H,W, got {}",
            parts.len()
        ));
    }
    let mut out = [0u32; 4];
    for (o, p) in out.iter_mut().zip(&parts) {
        *o = p
            .parse()
            .map_err(|_| format!("`{p}` is not a positive integer"))?;
        if *o == 0 {
            return Err("sizes must be positive".into());
        }
    }
    Ok(out)
}

pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    let architecture = match (args.bundle, args.config, args.preset) {
        (Some(dir), _, _) => ArchitectureSource::BundleDir(dir),
        (None, Some(path), _) => ArchitectureSource::ConfigFile(path),
        (None, None, Some(Preset::Bundle)) => ArchitectureSource::BundlePreset,
        (None, None, Some(Preset::BundleLatent4)) => ArchitectureSource::BundleLatent4Preset,
        (None, None, None) => bail!("give --bundle DIR, --config FILE or --preset bundle"),
    };
    let opts = ConvertOptions {
        autoencoder: args.autoencoder,
        unet: args.unet,
        architecture,
        dtype: DType::from(args.dtype),
        scale_factor: args.scale_factor,
        latent_shape: args.latent_shape,
        key: args.key,
        attention_output_projection: args.attention_output_projection,
        decoder_only: args.decoder_only,
    };
    // Progress lines quote config keys and paths from the inputs: no control character from
    // them reaches the terminal.
    let done = convert_to_file(&opts, &args.out, &mut |line| {
        say!("{}", ldm_io::escape::escape(line))
    })?;
    say!(
        "wrote {}: {} tensors ({}), {} bytes, checksum xxh3-64 {:016x} (verified)",
        args.out.display(),
        done.tensors,
        done.dtype.name(),
        done.bytes,
        done.checksum
    );
    Ok(())
}
