//! The allocation budget: how many bytes an input file may make us allocate. Every reader in this
//! crate computes what a file's header asks for, checks it against the file's real length and
//! against a `Budget` before allocating, and refuses with the byte count it would have needed.
//!
//! The default limit is half of the machine's physical memory (`MemTotal` in /proc/meminfo), or
//! 8 GiB where that cannot be read; commands that accept `--max-memory` replace it.

use std::fmt;

/// Limit used when /proc/meminfo cannot be read.
pub const FALLBACK_LIMIT: u64 = 8 << 30;

/// A byte limit on what reading one input may allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    limit: u64,
}

/// An input that would need more memory than the budget allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct BudgetError {
    /// What would be allocated ("the voxel data", "preprocessing", ...).
    pub what: String,
    pub need: u128,
    pub limit: u64,
}

impl fmt::Display for BudgetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} needs {} bytes ({}), above the memory limit of {} bytes ({}); raise it with --max-memory if the machine has the memory",
            self.what,
            self.need,
            gib(self.need),
            self.limit,
            gib(self.limit as u128)
        )
    }
}

impl From<BudgetError> for std::io::Error {
    fn from(e: BudgetError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::OutOfMemory, e.to_string())
    }
}

/// `bytes` in GiB with two decimals, e.g. "4.00 GiB".
pub fn gib(bytes: u128) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

impl Budget {
    /// A budget of `limit` bytes.
    pub const fn new(limit: u64) -> Budget {
        Budget { limit }
    }

    /// Half of physical memory, or `FALLBACK_LIMIT` when it cannot be read.
    pub fn from_system() -> Budget {
        Budget::new(physical_memory().map(|m| m / 2).unwrap_or(FALLBACK_LIMIT))
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Ok when `need` bytes fit the limit; otherwise an error naming `what` and both numbers.
    pub fn check(&self, need: u128, what: &str) -> Result<(), BudgetError> {
        if need <= self.limit as u128 {
            Ok(())
        } else {
            Err(BudgetError {
                what: what.to_string(),
                need,
                limit: self.limit,
            })
        }
    }
}

impl Default for Budget {
    fn default() -> Budget {
        Budget::from_system()
    }
}

/// `MemTotal` from /proc/meminfo in bytes.
pub fn physical_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Parses a byte count: a number with an optional K/M/G/T suffix (powers of 1024, an optional
/// trailing "B" or "iB"), e.g. "512M", "8G", "1.5GiB", "1000000".
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let upper = t.to_ascii_uppercase();
    let body = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (num, shift) = match body.chars().last() {
        Some('K') => (&body[..body.len() - 1], 10),
        Some('M') => (&body[..body.len() - 1], 20),
        Some('G') => (&body[..body.len() - 1], 30),
        Some('T') => (&body[..body.len() - 1], 40),
        _ => (body, 0),
    };
    let bad = || format!("{s:?} is not a size (e.g. 512M, 8G, 1000000)");
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    let bytes = v * (1u64 << shift) as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("8g"), Ok(8 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("2KB"), Ok(2048));
        for bad in ["", "G", "-1G", "abc", "0", "nanG"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn check_names_the_bytes() {
        let b = Budget::new(1 << 30);
        assert!(b.check(1 << 30, "x").is_ok());
        let e = b.check(4 << 30, "the voxel data").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("the voxel data needs 4294967296 bytes (4.00 GiB)"),
            "{msg}"
        );
        assert!(msg.contains("1073741824"), "{msg}");
    }

    #[test]
    fn system_budget_is_positive() {
        assert!(Budget::from_system().limit() > 0);
    }
}
