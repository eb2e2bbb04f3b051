//! The arguments of `generate` that need no model, checked first so that a typo never costs a
//! model load: shard, format, device, precision, latent shape, count and seed range, threads,
//! memory bound, step count and the `--init-noise` file.

use super::init_noise::read_init_noise;
use super::Args;
use crate::cmd::memory;
use crate::output::shard::Shard;
use crate::output::volume::Format;
use anyhow::{anyhow, bail};
use ldm_runtime::arguments::{self, Spelling};
use ldm_runtime::{Device, Precision};
use std::path::PathBuf;

/// What the cheap, model-independent arguments say.
pub(super) struct Settings {
    pub(super) shard: Shard,
    pub(super) format: Format,
    pub(super) device: Device,
    pub(super) precision: Precision,
    pub(super) latent_arg: Option<[usize; 4]>,
    pub(super) max_memory: Option<usize>,
    /// `--init-noise`: the file, its latent shape and values.
    pub(super) init: Option<(PathBuf, [usize; 4], Vec<f32>)>,
}

/// Checks every argument that needs no model, so that a typo never costs a model load.
pub(super) fn parse_settings(args: &Args) -> anyhow::Result<Settings> {
    let shard = match &args.shard {
        Some(s) => Shard::parse(s)?,
        None => Shard::ALL,
    };
    let format = Format::parse(&args.format).map_err(|e| anyhow!(e))?;
    let device = arguments::parse_device(&args.device, Spelling::Cli)?;
    let precision = arguments::parse_precision(&args.precision, Spelling::Cli)?;
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
    arguments::check_step_count(args.steps, Spelling::Cli)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_latent_shapes() {
        assert_eq!(parse_latent_shape("8,36,44,28").unwrap(), [8, 36, 44, 28]);
        assert_eq!(parse_latent_shape("8x4x4x4").unwrap(), [8, 4, 4, 4]);
        for bad in ["8,36,44", "8,0,4,4", "a,b,c,d", "", "8,4,4,4,4"] {
            assert!(parse_latent_shape(bad).is_err(), "{bad}");
        }
    }
}
