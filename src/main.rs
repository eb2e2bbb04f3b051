//! brats-ldm: the command line. Each subcommand lives in its own module under `cmd/`.

mod cmd;
mod output;

use clap::{Parser, Subcommand};
use ldm_io::escape::{chain_text, escape, escape_keep_lines};

#[derive(Parser)]
#[command(
    name = "brats-ldm",
    version,
    about = "Synthetic FLAIR brain MRI from a 3-D latent diffusion model"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download, verify and extract the BraTS (Decathlon Task01) archive.
    Download(cmd::download::DownloadArgs),
    /// Write a Task01-shaped dataset of procedural brain phantoms.
    Phantoms(cmd::phantoms::PhantomsArgs),
    /// Preprocess NIfTI volumes as the bundle does and write float32 NIfTI.
    Prepare(cmd::prepare::PrepareArgs),
    /// Convert MONAI checkpoints (.pt or .safetensors) into a weight blob.
    Convert(cmd::convert::ConvertArgs),
    /// Describe a weight blob: configs, tensors, parameters, checksum, provenance.
    Inspect(cmd::inspect::InspectArgs),
    /// Generate synthetic volumes (NIfTI-1) from a model blob, for one seed or a sharded batch.
    Generate(cmd::generate::Args),
    /// Measure latency per sampling step, decode time, memory and GFLOP/s.
    Bench(cmd::bench::Args),
    /// Train the autoencoder (VAE-GAN) or the latent diffusion UNet (CPU).
    Train(cmd::train::TrainArgs),
    /// Export trained checkpoints to a weight blob.
    Export(cmd::export::ExportArgs),
    /// Measure generated volumes: diversity, similarity to real volumes, reconstructions, FID of given features.
    #[command(long_about = cmd::evaluate::LONG_ABOUT)]
    Evaluate(cmd::evaluate::EvaluateArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Command::Download(a) => cmd::download::run(a),
        Command::Phantoms(a) => cmd::phantoms::run(a),
        Command::Prepare(a) => cmd::prepare::run(a),
        Command::Convert(a) => cmd::convert::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Generate(a) => cmd::generate::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Train(a) => cmd::train::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Evaluate(a) => cmd::evaluate::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // No control character or escape sequence from an input reaches the terminal, and
            // every message is one line except a checkpoint's mismatch report, which lists
            // tensors one per line and escapes their names itself.
            let text = chain_text(e.as_ref());
            let report = e.chain().any(|c| {
                c.downcast_ref::<ldm_import::convert::ConvertError>()
                    .is_some_and(|c| c.is_multiline_report())
            });
            let shown = if report {
                escape_keep_lines(&text)
            } else {
                escape(&text)
            };
            eprintln!("error: {shown}");
            std::process::ExitCode::FAILURE
        }
    }
}
