//! Memory of a run as `generate` and `bench` see it: `--max-memory`, the memory this process may
//! still take (MemAvailable, or the cgroup's limit when lower), the one-line description of a
//! plan's bytes, and the refusal when a plan does not fit — all before the runtime allocates its
//! arena.

use anyhow::bail;
use ldm_runtime::PlanReport;
use std::path::Path;

const GIB: f64 = (1u64 << 30) as f64;

/// Bytes as GiB with two decimals.
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / GIB)
}

/// Parses `--max-memory` with the same syntax as every other size of the CLI (ldm-io's
/// `parse_size`: 512M, 8G, 1.5GiB, 1000000; K/M/G/T are powers of 1024).
pub fn parse_max_memory(s: &str) -> anyhow::Result<usize> {
    let bytes =
        ldm_io::budget::parse_size(s).map_err(|e| anyhow::anyhow!("bad --max-memory: {e}"))?;
    usize::try_from(bytes)
        .map_err(|_| anyhow::anyhow!("bad --max-memory {s}: too large for this machine"))
}

/// A zeroed buffer of `len` floats, or an error naming `what` and its bytes when the system
/// refuses (instead of aborting the process).
pub fn try_zeroed(len: usize, what: &str) -> anyhow::Result<Vec<f32>> {
    let mut v: Vec<f32> = Vec::new();
    v.try_reserve_exact(len).map_err(|_| {
        anyhow::anyhow!(
            "cannot allocate the {what}: {} ({} bytes) not available",
            gib(len as u64 * 4),
            len as u128 * 4
        )
    })?;
    v.resize(len, 0.0);
    Ok(v)
}

/// Memory this process can still take, and where that number comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Available {
    pub bytes: u64,
    pub source: &'static str,
}

/// `MemAvailable` from /proc/meminfo, lowered to the room left under this process's cgroup v2
/// `memory.max` (minus `memory.current`) when that is smaller. None when neither is readable
/// (not Linux): then no check is made.
pub fn available() -> Option<Available> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| mem_available(&t))
        .map(|bytes| Available {
            bytes,
            source: "MemAvailable",
        });
    let cgroup = cgroup_room().map(|bytes| Available {
        bytes,
        source: "cgroup memory.max",
    });
    match (meminfo, cgroup) {
        (Some(m), Some(c)) => Some(if c.bytes < m.bytes { c } else { m }),
        (m, c) => m.or(c),
    }
}

/// The `MemAvailable:` line of /proc/meminfo, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Bytes left under the cgroup v2 limit of this process (its own cgroup directory from
/// /proc/self/cgroup, else the mount root), None when unlimited or not cgroup v2.
fn cgroup_room() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::"))
                .map(|p| Path::new("/sys/fs/cgroup").join(p.trim_start_matches('/')))
        });
    let root = Path::new("/sys/fs/cgroup").to_path_buf();
    for dir in own.into_iter().chain(std::iter::once(root)) {
        if let Some(max) = read_limit(&dir.join("memory.max")) {
            let current = read_limit(&dir.join("memory.current")).unwrap_or(0);
            return Some(max.saturating_sub(current));
        }
    }
    None
}

/// A cgroup file holding a byte count ("max" or unreadable: None).
fn read_limit(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The plan's bytes on one line, e.g. "plan: 2.31 GiB (weights 0.40 GiB, arena 1.80 GiB, ...)".
pub fn describe(plan: &PlanReport, volume_bytes: u64) -> String {
    format!(
        "plan: {} (weights {}, {})",
        gib(plan.total_bytes as u64 + volume_bytes),
        gib(plan.weights_bytes as u64),
        parts_to_allocate(plan, volume_bytes)
    )
}

/// What is still to be allocated once the weights are packed: arena, workspaces, sampler
/// state, output volume, and the decoder's slabs when it works in slabs.
fn parts_to_allocate(plan: &PlanReport, volume_bytes: u64) -> String {
    let mut s = format!(
        "arena {}, workspaces {}, state {}, output volume {}",
        gib(plan.arena_bytes as u64),
        gib(plan.workspace_bytes as u64),
        gib(plan.state_bytes as u64),
        gib(volume_bytes)
    );
    if plan.decoder_slabs > 0 {
        s.push_str(&format!(
            "; decoder in {} slabs of {} planes",
            plan.decoder_slabs, plan.decoder_slab_planes
        ));
    }
    s
}

/// Refuses a plan that cannot fit: the arena, workspaces, state and output volume still to be
/// allocated (the weights are already in memory) against what is available.
pub fn check_fits(
    plan: &PlanReport,
    volume_bytes: u64,
    available: Option<&Available>,
) -> anyhow::Result<()> {
    let Some(avail) = available else {
        return Ok(());
    };
    let to_allocate = (plan.total_bytes - plan.weights_bytes) as u64 + volume_bytes;
    if to_allocate > avail.bytes {
        bail!(
            "the plan needs {} beyond the weights ({}), {} available ({}): pass --max-memory to \
             decode in slabs (e.g. --max-memory {:.1}GiB) or a smaller --latent-shape",
            gib(to_allocate),
            parts_to_allocate(plan, volume_bytes),
            gib(avail.bytes),
            avail.source,
            (avail.bytes as f64 * 0.8 / GIB).max(0.1)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_memory_parses_like_every_size() {
        assert_eq!(parse_max_memory("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_max_memory("512M").unwrap(), 512 << 20);
        let e = parse_max_memory("lots").unwrap_err().to_string();
        assert!(e.contains("--max-memory") && e.contains("lots"), "{e}");
    }

    #[test]
    fn meminfo_is_read_in_bytes() {
        let t = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(mem_available(t), Some(20_000_000 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
        // this machine: some memory is available
        if let Some(a) = available() {
            assert!(a.bytes > 0);
        }
    }

    #[test]
    fn a_plan_that_does_not_fit_is_refused_with_numbers() {
        let plan = PlanReport {
            weights_bytes: 1 << 30,
            arena_bytes: 16 << 30,
            workspace_bytes: 1 << 20,
            state_bytes: 1 << 20,
            total_bytes: (17 << 30) + (2 << 20),
            ..PlanReport::default()
        };
        let small = Available {
            bytes: 8 << 30,
            source: "MemAvailable",
        };
        let e = check_fits(&plan, 0, Some(&small)).unwrap_err().to_string();
        assert!(
            e.contains("needs 16.00 GiB") && e.contains("8.00 GiB available"),
            "{e}"
        );
        let big = Available {
            bytes: 32 << 30,
            source: "MemAvailable",
        };
        assert!(check_fits(&plan, 0, Some(&big)).is_ok());
        assert!(check_fits(&plan, 0, None).is_ok());
    }
}
