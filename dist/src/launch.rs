//! The local launcher behind `--nproc-per-node N`: starts N copies of a program with torchrun's
//! environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR=127.0.0.1`,
//! `MASTER_PORT` = a free port), forwards each line they print with a `[rank i]` prefix, and
//! supervises them: when one fails, the others get `grace` to stop on their own (they notice the
//! lost connection within one collective) and are then killed, and the launch fails naming the
//! rank that failed first. Each worker's stdin is a pipe from the launcher, so a worker can exit
//! when the launcher is gone ([`exit_when_launcher_exits`]).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::DistError;

/// Set in every worker's environment by [`launch`].
pub const LAUNCHED_ENV: &str = "LDM_DIST_LAUNCHED";

/// What to start.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub nproc: usize,
    /// Extra environment variables for every worker.
    pub env: Vec<(OsString, OsString)>,
    /// How long the other ranks may take to stop after one failed, before they are killed.
    pub grace: Duration,
}

/// A free TCP port on the loopback interface (bound, read and released).
pub fn free_port() -> Result<u16, DistError> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| DistError::Launch(format!("no free local port: {e}")))
}

fn forward(rank: usize, stream: impl Read + Send + 'static, to_stderr: bool) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches(['\n', '\r']);
                    // One write per line, so lines of different ranks never interleave.
                    let out = format!("[rank {rank}] {text}\n");
                    if to_stderr {
                        let _ = std::io::stderr().lock().write_all(out.as_bytes());
                    } else {
                        let _ = std::io::stdout().lock().write_all(out.as_bytes());
                    }
                }
            }
        }
    })
}

/// How a worker ended, in words.
pub fn describe_status(s: &ExitStatus) -> String {
    if let Some(c) = s.code() {
        return format!("exit status {c}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = s.signal() {
            return format!("killed by signal {sig}");
        }
    }
    s.to_string()
}

struct Worker {
    child: Child,
    _stdin: Option<ChildStdin>,
    status: Option<ExitStatus>,
}

/// Starts `nproc` workers and waits for all; `Ok` when every one exited with success.
pub fn launch(o: &LaunchOptions) -> Result<(), DistError> {
    if o.nproc == 0 {
        return Err(DistError::Launch(
            "--nproc-per-node must be at least 1".into(),
        ));
    }
    let port = free_port()?;
    let mut workers: Vec<Worker> = Vec::with_capacity(o.nproc);
    let mut forwarders = Vec::new();
    for rank in 0..o.nproc {
        let spawned = Command::new(&o.program)
            .args(&o.args)
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", o.nproc.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("LOCAL_WORLD_SIZE", o.nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env(LAUNCHED_ENV, "1")
            .envs(o.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                for w in &mut workers {
                    let _ = w.child.kill();
                    let _ = w.child.wait();
                }
                return Err(DistError::Launch(format!(
                    "starting rank {rank} ({}): {e}",
                    o.program.display()
                )));
            }
        };
        if let Some(out) = child.stdout.take() {
            forwarders.push(forward(rank, out, false));
        }
        if let Some(err) = child.stderr.take() {
            forwarders.push(forward(rank, err, true));
        }
        let stdin = child.stdin.take();
        workers.push(Worker {
            child,
            _stdin: stdin,
            status: None,
        });
    }
    let mut first_failure: Option<(usize, String)> = None;
    let mut kill_at: Option<Instant> = None;
    let mut killed = false;
    while workers.iter().any(|w| w.status.is_none()) {
        for (rank, w) in workers.iter_mut().enumerate() {
            if w.status.is_some() {
                continue;
            }
            if let Ok(Some(s)) = w.child.try_wait() {
                w.status = Some(s);
                if !s.success() && first_failure.is_none() {
                    first_failure = Some((rank, describe_status(&s)));
                    kill_at = Some(Instant::now() + o.grace);
                }
            }
        }
        if kill_at.is_some_and(|t| Instant::now() >= t) && !killed {
            for w in workers.iter_mut().filter(|w| w.status.is_none()) {
                let _ = w.child.kill();
            }
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for f in forwarders {
        let _ = f.join();
    }
    match first_failure {
        None => Ok(()),
        Some((rank, how)) => {
            let others = if killed {
                format!(
                    "; the ranks still running after {:.0} s were killed",
                    o.grace.as_secs_f64()
                )
            } else {
                String::new()
            };
            Err(DistError::Launch(format!(
                "rank {rank} failed first ({how}){others}"
            )))
        }
    }
}

/// In a worker started by [`launch`]: exits the process (status 1) once the launcher is gone
/// (its end of stdin closes), so no orphaned rank keeps running. Does nothing elsewhere.
pub fn exit_when_launcher_exits() {
    if std::env::var_os(LAUNCHED_ENV).is_none() {
        return;
    }
    std::thread::spawn(|| {
        let mut sink = [0u8; 256];
        let mut stdin = std::io::stdin();
        while let Ok(n) = stdin.read(&mut sink) {
            if n == 0 {
                break;
            }
        }
        // stderr went to the launcher too: it may be closed, so the note is best effort.
        let _ = writeln!(std::io::stderr(), "error: the launcher of this rank is gone; stopping");
        std::process::exit(1);
    });
}
