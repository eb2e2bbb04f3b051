//! The BraTS download (`--download_brats True` of the bundle): fetch the Decathlon archive over
//! HTTPS with a progress bar, resume a broken transfer with Range requests, verify the md5
//! before anything uses the file, and extract it safely (no absolute paths, no `..`, no links
//! leaving the folder, no device files; the whole archive is checked before anything is
//! written). A finished, verified download and extraction is not repeated.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::error::{DataError, Result};

/// The archive MONAI's `DecathlonDataset` downloads for Task01_BrainTumour.
pub const TASK01_URL: &str = "https://msd-for-monai.s3-us-west-2.amazonaws.com/Task01_BrainTumour.tar";
/// Its md5.
pub const TASK01_MD5: &str = "240a19d752f0d9e9101544901065d872";

/// How to download.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    pub url: String,
    /// Expected md5 (hex); `None` skips verification (only for trusted custom URLs).
    pub md5: Option<String>,
    /// Attempts after the first one when a transfer breaks (each resumes where it stopped).
    pub retries: u32,
    /// Pause before retry n is `backoff * n`.
    pub backoff: Duration,
    /// Give up on a connection silent for this long.
    pub read_timeout: Duration,
    /// Show a progress bar (only drawn when stderr is a terminal).
    pub progress: bool,
    /// Delete the archive after a successful extraction.
    pub remove_archive: bool,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            url: TASK01_URL.to_string(),
            md5: Some(TASK01_MD5.to_string()),
            retries: 5,
            backoff: Duration::from_secs(2),
            read_timeout: Duration::from_secs(60),
            progress: true,
            remove_archive: false,
        }
    }
}

fn dl_err(url: &str, reason: impl Into<String>) -> DataError {
    DataError::Download {
        url: url.to_string(),
        reason: reason.into(),
    }
}

/// The file name a URL points at (last path segment, query stripped).
pub fn file_name_of(url: &str) -> Result<String> {
    let no_query = url.split(['?', '#']).next().unwrap_or("");
    let name = no_query.rsplit('/').next().unwrap_or("");
    if name.is_empty() || name == "." || name == ".." || name.contains('\\') {
        return Err(dl_err(url, "the URL does not end in a file name"));
    }
    Ok(name.to_string())
}

/// md5 of a file, lowercase hex.
pub fn md5_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut ctx = md5::Context::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        ctx.consume(&buf[..n]);
    }
    Ok(format!("{:x}", ctx.compute()))
}

fn progress_bar(opts: &DownloadOptions, total: Option<u64>, name: &str) -> indicatif::ProgressBar {
    if !opts.progress || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = match total {
        Some(t) => indicatif::ProgressBar::new(t),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let style =
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_message(name.to_string());
    pb
}

/// Parse "bytes START-END/TOTAL" (TOTAL may be "*").
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

enum Attempt {
    /// The transfer finished (the server said so, or the size is reached).
    Complete,
    /// It broke; try again from the bytes now on disk.
    Retry(String),
}

fn one_attempt(
    agent: &ureq::Agent,
    opts: &DownloadOptions,
    part: &Path,
    pb: &mut Option<indicatif::ProgressBar>,
) -> Result<Attempt> {
    let url = opts.url.as_str();
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut req = agent.get(url);
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let mut resp = match req.call() {
        Ok(r) => r,
        Err(e) => return Ok(Attempt::Retry(format!("request failed: {e}"))),
    };
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (append, total) = match status {
        200 => (false, header("content-length").and_then(|v| v.parse::<u64>().ok())),
        206 => {
            let cr = header("content-range").and_then(|v| parse_content_range(&v));
            match cr {
                Some((start, total)) if start == have => (true, total),
                _ => {
                    // the server answered another range: start over
                    std::fs::remove_file(part).map_err(|e| DataError::io(part, e))?;
                    return Ok(Attempt::Retry(
                        "server returned an unexpected byte range; restarting".into(),
                    ));
                }
            }
        }
        416 if have > 0 => {
            // nothing left to send: the partial file is already whole (the md5 decides)
            let total = header("content-range").and_then(|v| v.rsplit('/').next().and_then(|t| t.parse::<u64>().ok()));
            if total.map_or(true, |t| t == have) {
                return Ok(Attempt::Complete);
            }
            std::fs::remove_file(part).map_err(|e| DataError::io(part, e))?;
            return Ok(Attempt::Retry(
                "partial file larger than the archive; restarting".into(),
            ));
        }
        s if (500..600).contains(&s) || s == 408 || s == 429 => return Ok(Attempt::Retry(format!("HTTP {s}"))),
        s => return Err(dl_err(url, format!("HTTP status {s}"))),
    };
    let mut file = if append {
        OpenOptions::new().append(true).open(part)
    } else {
        File::create(part)
    }
    .map_err(|e| DataError::io(part, e))?;
    let start = if append { have } else { 0 };
    let name = part
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("download")
        .to_string();
    let bar = pb.get_or_insert_with(|| progress_bar(opts, total, &name));
    if let Some(t) = total {
        bar.set_length(t);
    }
    bar.set_position(start);
    let mut reader = resp.body_mut().as_reader();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = start;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                file.flush().map_err(|e| DataError::io(part, e))?;
                return Ok(Attempt::Retry(format!("transfer broke at byte {got}: {e}")));
            }
        };
        file.write_all(&buf[..n]).map_err(|e| DataError::io(part, e))?;
        got += n as u64;
        bar.set_position(got);
    }
    file.sync_all().map_err(|e| DataError::io(part, e))?;
    match total {
        Some(t) if got < t => Ok(Attempt::Retry(format!("transfer ended at byte {got} of {t}"))),
        Some(t) if got > t => {
            std::fs::remove_file(part).map_err(|e| DataError::io(part, e))?;
            Ok(Attempt::Retry(format!(
                "received {got} bytes, more than the announced {t}; restarting"
            )))
        }
        _ => Ok(Attempt::Complete),
    }
}

/// Download `opts.url` to `dest` (via `dest` + ".part", resumed across attempts and across
/// runs), verify the md5, then rename into place. A `dest` that already exists with the right
/// md5 is not downloaded again. On a checksum mismatch the file is moved to `dest` + ".bad"
/// and an error returned: it is never used.
pub fn download_file(dest: &Path, opts: &DownloadOptions) -> Result<PathBuf> {
    let url = opts.url.as_str();
    let expected = opts.md5.as_ref().map(|m| m.trim().to_ascii_lowercase());
    if let Some(m) = &expected {
        if m.len() != 32 || !m.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(DataError::InvalidSetting(format!("md5 {m:?} is not 32 hex digits")));
        }
    }
    if dest.is_file() {
        match &expected {
            None => return Ok(dest.to_path_buf()),
            Some(m) if md5_file(dest)? == *m => return Ok(dest.to_path_buf()),
            Some(_) => {
                // a stale or damaged final file: fetch again
                std::fs::remove_file(dest).map_err(|e| DataError::io(dest, e))?;
            }
        }
    }
    let mut part = dest.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(opts.read_timeout))
        .user_agent(concat!("brats-ldm/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut pb = None;
    let mut last = String::new();
    let mut complete = false;
    for attempt in 0..=opts.retries {
        if attempt > 0 {
            std::thread::sleep(opts.backoff * attempt);
        }
        match one_attempt(&agent, opts, &part, &mut pb)? {
            Attempt::Complete => {
                complete = true;
                break;
            }
            Attempt::Retry(why) => last = why,
        }
    }
    if let Some(bar) = &pb {
        bar.finish_and_clear();
    }
    if !complete {
        return Err(dl_err(
            url,
            format!(
                "gave up after {} attempt(s); last: {last}; the partial file {} is kept and resumed next time",
                opts.retries + 1,
                part.display()
            ),
        ));
    }
    if let Some(m) = expected {
        let actual = md5_file(&part)?;
        if actual != m {
            let mut bad = dest.as_os_str().to_owned();
            bad.push(".bad");
            let bad = PathBuf::from(bad);
            std::fs::rename(&part, &bad).map_err(|e| DataError::io(&part, e))?;
            return Err(DataError::Checksum {
                path: dest.to_path_buf(),
                expected: m,
                actual,
                moved_to: bad,
            });
        }
    }
    std::fs::rename(&part, dest).map_err(|e| DataError::io(dest, e))?;
    Ok(dest.to_path_buf())
}

/// A path inside the extraction folder: relative, only normal components (`.` dropped).
fn safe_relative(p: &Path) -> std::result::Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("contains '..'".into()),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path".into()),
        }
    }
    if out.as_os_str().is_empty() {
        return Err("empty path".into());
    }
    Ok(out)
}

/// Where a symlink at `entry` pointing to `target` lands, lexically, relative to the root.
fn symlink_destination(entry: &Path, target: &Path) -> std::result::Result<PathBuf, String> {
    if target.is_absolute() {
        return Err(format!("symlink to the absolute path {}", target.display()));
    }
    let mut stack: Vec<std::ffi::OsString> = entry
        .parent()
        .map(|p| p.iter().map(|s| s.to_os_string()).collect())
        .unwrap_or_default();
    for c in target.components() {
        match c {
            Component::Normal(n) => stack.push(n.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => {
                if stack.pop().is_none() {
                    return Err(format!("symlink to {} leaves the folder", target.display()));
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err("symlink to an absolute path".into()),
        }
    }
    Ok(stack.iter().collect())
}

#[derive(Debug)]
enum Planned {
    Dir(PathBuf),
    File(PathBuf),
    HardLink(PathBuf, PathBuf),
    SymLink(PathBuf, PathBuf),
}

/// Check every entry of a tar archive; nothing is written.
fn plan_extraction(archive: &Path) -> Result<Vec<Planned>> {
    let f = File::open(archive).map_err(|e| DataError::io(archive, e))?;
    let mut ar = tar::Archive::new(f);
    let unsafe_entry = |entry: &str, reason: String| DataError::UnsafeArchive {
        archive: archive.to_path_buf(),
        entry: entry.to_string(),
        reason,
    };
    let mut plan = Vec::new();
    let entries = ar.entries_with_seek().map_err(|e| DataError::io(archive, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(archive, e))?;
        let raw = entry.path().map_err(|e| DataError::io(archive, e))?.into_owned();
        let shown = raw.display().to_string();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        }
        let rel = safe_relative(&raw).map_err(|r| unsafe_entry(&shown, r))?;
        let link = || -> Result<PathBuf> {
            entry
                .link_name()
                .map_err(|e| DataError::io(archive, e))?
                .map(|l| l.into_owned())
                .ok_or_else(|| unsafe_entry(&shown, "link without a target".into()))
        };
        if kind.is_dir() {
            plan.push(Planned::Dir(rel));
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            plan.push(Planned::File(rel));
        } else if kind.is_hard_link() {
            let target = link()?;
            let t = safe_relative(&target)
                .map_err(|r| unsafe_entry(&shown, format!("hard link target {}: {r}", target.display())))?;
            plan.push(Planned::HardLink(rel, t));
        } else if kind.is_symlink() {
            let target = link()?;
            symlink_destination(&rel, &target).map_err(|r| unsafe_entry(&shown, r))?;
            plan.push(Planned::SymLink(rel, target));
        } else {
            return Err(unsafe_entry(
                &shown,
                format!("unsupported entry type {kind:?} (device, fifo or sparse file)"),
            ));
        }
    }
    Ok(plan)
}

/// Refuse to write through a symlink that already sits inside `root`.
fn check_no_symlink_on_path(root: &Path, rel: &Path, archive: &Path) -> Result<()> {
    let mut p = root.to_path_buf();
    for c in rel.iter() {
        p.push(c);
        if let Ok(m) = std::fs::symlink_metadata(&p) {
            if m.file_type().is_symlink() {
                return Err(DataError::UnsafeArchive {
                    archive: archive.to_path_buf(),
                    entry: rel.display().to_string(),
                    reason: format!("{} is a symlink; refusing to write through it", p.display()),
                });
            }
        }
    }
    Ok(())
}

/// Extract a tar archive into `dir` after checking every entry: absolute paths, `..`,
/// symlinks or hard links leading outside `dir`, and device/fifo entries refuse the whole
/// archive before anything is written. Symlinks are created last, so no entry is written
/// through one. Returns the number of entries written.
pub fn extract_tar(archive: &Path, dir: &Path) -> Result<usize> {
    let plan = plan_extraction(archive)?;
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let f = File::open(archive).map_err(|e| DataError::io(archive, e))?;
    let mut ar = tar::Archive::new(f);
    let mut count = 0usize;
    let mut symlinks = Vec::new();
    let mut planned = plan.into_iter();
    for entry in ar.entries().map_err(|e| DataError::io(archive, e))? {
        let mut entry = entry.map_err(|e| DataError::io(archive, e))?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        }
        let step = planned.next().ok_or_else(|| DataError::BadDataset {
            path: archive.to_path_buf(),
            reason: "archive changed while extracting".into(),
        })?;
        match step {
            Planned::Dir(rel) => {
                check_no_symlink_on_path(dir, &rel, archive)?;
                let p = dir.join(&rel);
                std::fs::create_dir_all(&p).map_err(|e| DataError::io(&p, e))?;
            }
            Planned::File(rel) => {
                check_no_symlink_on_path(dir, &rel, archive)?;
                let p = dir.join(&rel);
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
                }
                let mut out = File::create(&p).map_err(|e| DataError::io(&p, e))?;
                std::io::copy(&mut entry, &mut out).map_err(|e| DataError::io(&p, e))?;
            }
            Planned::HardLink(rel, target) => {
                check_no_symlink_on_path(dir, &rel, archive)?;
                check_no_symlink_on_path(dir, &target, archive)?;
                let (p, t) = (dir.join(&rel), dir.join(&target));
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
                }
                std::fs::copy(&t, &p).map_err(|e| DataError::io(&t, e))?;
            }
            Planned::SymLink(rel, target) => {
                // created after everything else; counted there
                symlinks.push((rel, target));
                continue;
            }
        }
        count += 1;
    }
    for (rel, target) in symlinks {
        check_no_symlink_on_path(dir, &rel, archive)?;
        let p = dir.join(&rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
        }
        #[cfg(unix)]
        std::os::unix::fs::symlink(&target, &p).map_err(|e| DataError::io(&p, e))?;
        #[cfg(not(unix))]
        {
            let _ = target;
            eprintln!(
                "warning: {}: symlinks are not supported on this platform; skipped",
                p.display()
            );
        }
        count += 1;
    }
    Ok(count)
}

const MARKER: &str = ".brats-ldm-download.json";

/// Download (unless already done), verify and extract the archive into `dir`; returns the
/// dataset folder (`dir/Task01_BrainTumour` for the real archive, else the folder holding
/// `dataset.json`, else `dir`). A marker records a finished job so it is not repeated.
pub fn download_dataset(dir: &Path, opts: &DownloadOptions) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let name = file_name_of(&opts.url)?;
    let marker = dir.join(MARKER);
    let stem = name.trim_end_matches(".tar").trim_end_matches(".tgz").to_string();
    let root_of = || {
        let candidate = dir.join(&stem);
        if candidate.join("dataset.json").is_file() {
            candidate
        } else {
            dir.to_path_buf()
        }
    };
    if let Ok(text) = std::fs::read_to_string(&marker) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            let same = v.get("url").and_then(|u| u.as_str()) == Some(opts.url.as_str())
                && v.get("md5").and_then(|m| m.as_str()) == opts.md5.as_deref();
            let root = root_of();
            if same && root.exists() {
                return Ok(root);
            }
        }
    }
    let archive = dir.join(&name);
    download_file(&archive, opts)?;
    extract_tar(&archive, dir)?;
    let text = serde_json::json!({ "url": opts.url, "md5": opts.md5, "archive": name }).to_string();
    ldm_io::atomic::write_bytes(&marker, text.as_bytes()).map_err(|e| DataError::io(&marker, e))?;
    if opts.remove_archive {
        std::fs::remove_file(&archive).map_err(|e| DataError::io(&archive, e))?;
    }
    Ok(root_of())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_checks() {
        assert!(safe_relative(Path::new("a/./b.nii")).is_ok());
        assert!(safe_relative(Path::new("../x")).is_err());
        assert!(safe_relative(Path::new("/etc/passwd")).is_err());
        assert!(symlink_destination(Path::new("a/b/link"), Path::new("../c")).is_ok());
        assert!(symlink_destination(Path::new("a/link"), Path::new("../../c")).is_err());
        assert!(symlink_destination(Path::new("link"), Path::new("/tmp")).is_err());
        assert_eq!(parse_content_range("bytes 10-99/100"), Some((10, Some(100))));
        assert_eq!(parse_content_range("bytes 10-99/*"), Some((10, None)));
        assert_eq!(file_name_of(TASK01_URL).unwrap(), "Task01_BrainTumour.tar");
        assert!(file_name_of("https://x/").is_err());
    }
}
