//! `brats-ldm download`: fetch, verify (md5) and safely extract the BraTS Task01 archive.

use std::path::PathBuf;

use anyhow::Context;
use ldm_trainer::data::download::{download_dataset, DownloadOptions, TASK01_MD5, TASK01_URL};

#[derive(clap::Args, Debug)]
#[command(
    about = "Download the Decathlon Task01_BrainTumour archive (about 7 GB), verify its md5 and extract it"
)]
pub struct DownloadArgs {
    /// Folder to download and extract into (created).
    #[arg(long)]
    pub dir: PathBuf,
    /// Archive URL (default: the one MONAI uses).
    #[arg(long, default_value = TASK01_URL)]
    pub url: String,
    /// Expected md5 of the archive (default: Task01's; required for another --url unless --no-verify).
    #[arg(long)]
    pub md5: Option<String>,
    /// Skip the md5 check (only for a trusted custom --url).
    #[arg(long, conflicts_with = "md5")]
    pub no_verify: bool,
    /// Retries of a broken transfer (each resumes where the last stopped).
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// Delete the archive after extracting it.
    #[arg(long)]
    pub remove_archive: bool,
}

pub fn run(a: DownloadArgs) -> anyhow::Result<()> {
    let md5 = match (&a.md5, a.no_verify) {
        (Some(m), _) => Some(m.clone()),
        (None, true) => None,
        (None, false) if a.url == TASK01_URL => Some(TASK01_MD5.to_string()),
        (None, false) => {
            anyhow::bail!("--url other than the default needs --md5 HEX (or --no-verify)")
        }
    };
    let opts = DownloadOptions {
        url: a.url.clone(),
        md5,
        retries: a.retries,
        remove_archive: a.remove_archive,
        ..Default::default()
    };
    let root = download_dataset(&a.dir, &opts)
        .with_context(|| format!("downloading {} into {}", a.url, a.dir.display()))?;
    println!("dataset ready: {}", root.display());
    Ok(())
}
