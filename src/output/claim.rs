//! Per-volume claim files, so that runs sharing an output folder (concurrent runs, overlapping
//! job-array shards) never make the same volume twice. Before touching `NAME`, a run creates
//! `.NAME.claim` with O_CREAT|O_EXCL (`create_new`, atomic on local filesystems and NFSv3+); the
//! file records who holds it (host, boot, PID, the process's start time, a random token). The
//! holder removes it once the volume, its preview and its manifest line are written, or when
//! it gives up. A claim whose holder is gone — same host and boot, and that PID no longer runs or
//! is another process — is stale and taken over; claims from other hosts are never taken over
//! automatically (their liveness cannot be checked from here). The protocol is described for
//! users in docs/batch-jobs.md.

use std::collections::hash_map::RandomState;
use std::fs::{self, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A claim whose file cannot be parsed is another run between creating and filling it; after
/// this long it can only be the leftover of a run killed in that instant.
const UNREADABLE_GRACE: Duration = Duration::from_secs(60);

/// The claim file of output `name` in `dir`.
pub fn claim_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.claim"))
}

/// Who holds a claim, as its file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub host: String,
    pub boot: String,
    pub pid: u32,
    /// Start time of the holding process (clock ticks after boot, /proc/PID/stat field 22).
    pub start: u64,
    /// Seconds since the Unix epoch when the claim was made.
    pub created: u64,
    pub token: String,
}

impl Holder {
    fn render(&self) -> String {
        format!(
            "brats-ldm claim\nhost={}\nboot={}\npid={}\nstart={}\ncreated={}\ntoken={}\n",
            self.host, self.boot, self.pid, self.start, self.created, self.token
        )
    }

    fn parse(text: &str) -> Option<Holder> {
        let mut lines = text.lines();
        if lines.next()? != "brats-ldm claim" {
            return None;
        }
        let mut field = |key: &str| -> Option<String> {
            let line = lines.next()?;
            line.strip_prefix(key)?
                .strip_prefix('=')
                .map(str::to_string)
        };
        Some(Holder {
            host: field("host")?,
            boot: field("boot")?,
            pid: field("pid")?.parse().ok()?,
            start: field("start")?.parse().ok()?,
            created: field("created")?.parse().ok()?,
            token: field("token")?,
        })
    }

    /// This process.
    fn me() -> Holder {
        let pid = std::process::id();
        let mut h = RandomState::new().build_hasher();
        h.write_u32(pid);
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        Holder {
            host: host_name(),
            boot: boot_id(),
            pid,
            start: process_start(pid).unwrap_or(0),
            created: now_secs(),
            token: format!("{:016x}", h.finish()),
        }
    }

    /// Whether the holder is certainly gone: same host and boot, and its PID is not running
    /// or now belongs to a process that started at another time. A claim from an earlier boot
    /// of this host is stale too. Anything unknown counts as alive.
    pub fn is_stale(&self) -> bool {
        if self.host != host_name() {
            return false;
        }
        let boot = boot_id();
        if !boot.is_empty() && !self.boot.is_empty() && self.boot != boot {
            return true;
        }
        if !Path::new("/proc/self/stat").exists() {
            return false; // no /proc: no way to tell
        }
        match process_start(self.pid) {
            None => true,
            Some(start) => self.start != 0 && start != self.start,
        }
    }

    /// "pid 123 on host node7 since 2026-12-05 08:00:00 UTC".
    pub fn describe(&self) -> String {
        format!(
            "pid {} on host {} for {} s",
            self.pid,
            self.host,
            now_secs().saturating_sub(self.created)
        )
    }
}

/// What `acquire` found.
#[derive(Debug)]
pub enum Acquired {
    /// This run holds the claim now.
    Owned(Claim),
    /// Another live (or unverifiable) run holds it; `None` when its file is being written.
    Busy(Option<Holder>),
}

/// A claim this run holds; dropped, it removes its file if the file is still ours.
#[derive(Debug)]
pub struct Claim {
    path: PathBuf,
    me: Holder,
    /// Set when the claim was taken over from a dead run: its description.
    pub took_over: Option<String>,
}

impl Claim {
    /// Whether the claim file still holds our token (it may have been taken over or removed by
    /// hand). Checked right before the volume gets its final name.
    pub fn still_ours(&self) -> bool {
        matches!(read_claim(&self.path), Ok(t) if Holder::parse(&t).is_some_and(|h| h.token == self.me.token))
    }

    /// Removes the claim file (if still ours).
    pub fn release(self) {
        // Drop does it.
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.still_ours() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Claims output `name` in `dir` for this process: creates `.NAME.claim` exclusively, or takes
/// over a stale claim of a dead local process, or reports who holds it.
pub fn acquire(dir: &Path, name: &str) -> std::io::Result<Acquired> {
    let path = claim_path(dir, name);
    let me = Holder::me();
    let mut took_over = None;
    for _ in 0..8 {
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                let written = f
                    .write_all(me.render().as_bytes())
                    .and_then(|_| f.sync_data());
                if let Err(e) = written {
                    let _ = fs::remove_file(&path);
                    return Err(e);
                }
                return Ok(Acquired::Owned(Claim {
                    path,
                    me,
                    took_over,
                }));
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let text = match read_claim(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => continue, // just released: try again
            Err(e) => return Err(e),
        };
        let holder = Holder::parse(&text);
        let stale = match &holder {
            Some(h) => h.is_stale(),
            None => fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > UNREADABLE_GRACE),
        };
        if !stale {
            return Ok(Acquired::Busy(holder));
        }
        if let TakeOver::Removed = take_over(&path, &text, &me)? {
            took_over =
                Some(holder.map_or_else(|| "an unreadable claim".to_string(), |h| h.describe()));
        }
        // Create ours in the next round (another run may still win it).
    }
    Ok(Acquired::Busy(None))
}

enum TakeOver {
    /// The stale claim is gone.
    Removed,
    /// Someone else changed the claim meanwhile: look again.
    Lost,
}

/// Removes the stale claim at `path` whose content was `seen`, without ever removing a fresh
/// claim another run made in between: rename it to a name of our own (atomic, so of two runs
/// only one gets it), then check that what we moved is what we judged stale; if it is not, put
/// it back.
fn take_over(path: &Path, seen: &str, me: &Holder) -> std::io::Result<TakeOver> {
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("claim");
    let aside = path.with_file_name(format!("{file_name}.stale.{}.{}", me.pid, me.token));
    match fs::rename(path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(TakeOver::Lost),
        Err(e) => return Err(e),
    }
    let moved = read_claim(&aside).unwrap_or_default();
    if moved == seen {
        fs::remove_file(&aside)?;
        return Ok(TakeOver::Removed);
    }
    // A live claim was moved: restore it unless yet another claim took its place.
    match fs::hard_link(&aside, path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => {
            let _ = fs::rename(&aside, path);
            return Err(e);
        }
    }
    let _ = fs::remove_file(&aside);
    Ok(TakeOver::Lost)
}

/// Most bytes of a claim file that are read (ours are about 150).
const MAX_CLAIM_BYTES: u64 = 64 << 10;

/// A claim file's text: its first `MAX_CLAIM_BYTES`, invalid UTF-8 replaced (a damaged claim is
/// an unreadable claim, not an error that stops the run).
fn read_claim(path: &Path) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(MAX_CLAIM_BYTES)
        .read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn host_name() -> String {
    let name = fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .collect();
    if name.is_empty() {
        "unknown".into()
    } else {
        name
    }
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().chars().filter(|c| c.is_ascii_graphic()).collect())
        .unwrap_or_default()
}

/// Start time of a running process (field 22 of /proc/PID/stat, after the parenthesised
/// command name); None when the PID does not run (or is a zombie).
fn process_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // fields after the state: ppid (4) ... starttime (22) is the 19th after the state
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let Acquired::Owned(c) = acquire(dir.path(), "a.nii.gz").unwrap() else {
            panic!("first claim")
        };
        assert!(c.still_ours());
        match acquire(dir.path(), "a.nii.gz").unwrap() {
            // our own live process holds it: busy, never stale
            Acquired::Busy(Some(h)) => assert_eq!(h.pid, std::process::id()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            acquire(dir.path(), "b.nii.gz").unwrap(),
            Acquired::Owned(_)
        ));
        c.release();
        assert!(!claim_path(dir.path(), "a.nii.gz").exists());
        assert!(matches!(
            acquire(dir.path(), "a.nii.gz").unwrap(),
            Acquired::Owned(_)
        ));
    }

    #[test]
    fn a_dead_local_holder_is_taken_over_and_other_hosts_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = claim_path(dir.path(), "s.npy");
        // a PID that has exited: a child we waited for
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        let dead = Holder {
            pid: child.id(),
            start: 1,
            ..Holder::me()
        };
        fs::write(&path, dead.render()).unwrap();
        match acquire(dir.path(), "s.npy").unwrap() {
            Acquired::Owned(c) => assert!(c.took_over.is_some()),
            other => panic!("{other:?}"),
        }
        // our PID with another start time: PID reuse, stale as well
        let reused = Holder {
            start: process_start(std::process::id()).unwrap() + 1,
            ..Holder::me()
        };
        assert!(reused.is_stale());
        let remote = Holder {
            host: "elsewhere".into(),
            ..dead
        };
        fs::write(&path, remote.render()).unwrap();
        assert!(
            matches!(acquire(dir.path(), "s.npy").unwrap(), Acquired::Busy(Some(h)) if h.host == "elsewhere")
        );
        // a claim being written (empty) is busy while young
        fs::write(&path, "").unwrap();
        assert!(matches!(
            acquire(dir.path(), "s.npy").unwrap(),
            Acquired::Busy(None)
        ));
    }

    #[test]
    fn a_taken_claim_is_not_ours_any_more() {
        let dir = tempfile::tempdir().unwrap();
        let Acquired::Owned(c) = acquire(dir.path(), "x").unwrap() else {
            panic!()
        };
        let other = Holder {
            token: "someone".into(),
            ..Holder::me()
        };
        fs::write(claim_path(dir.path(), "x"), other.render()).unwrap();
        assert!(!c.still_ours());
        drop(c);
        // not ours: left in place
        assert!(claim_path(dir.path(), "x").exists());
        assert!(Holder::parse(&other.render()) == Some(other));
    }

    /// The fuzzer's findings (fuzz/regressions/batch_claim): a fresh claim file that is not
    /// valid UTF-8 is an unreadable claim (busy, left as it is), not an error that stops the run.
    #[test]
    fn damaged_claims_from_the_fuzzer_are_busy_not_errors() {
        let found = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/batch_claim");
        let mut replayed = 0;
        for file in fs::read_dir(found).unwrap() {
            let bytes = fs::read(file.unwrap().path()).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = claim_path(dir.path(), "a.nii.gz");
            fs::write(&path, &bytes).unwrap();
            match acquire(dir.path(), "a.nii.gz").unwrap() {
                Acquired::Busy(None) => {}
                other => panic!("{other:?}"),
            }
            assert_eq!(fs::read(&path).unwrap(), bytes);
            replayed += 1;
        }
        assert!(replayed > 0);
    }
}
