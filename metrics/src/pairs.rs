//! Metrics over many pairs of volumes without holding every volume: the pairs of one set
//! (`i < j`) or of two sets (every `(i, j)`), visited block by block so that at most two blocks
//! of `block` volumes are loaded at a time, with the pairs of a block pair spread over
//! `threads` scoped threads. Loading is the caller's (`load(side, index)`), so volumes are read
//! lazily from wherever they live; a volume is read `ceil(n / block)` times at most.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Which set a volume index refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// The pairs to visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pairs {
    /// Every `(i, j)` with `i < j < n` of set A.
    Within(usize),
    /// Every `(i, j)` with `i < n_a` in set A and `j < n_b` in set B.
    Across(usize, usize),
}

impl Pairs {
    /// Number of pairs.
    pub fn count(self) -> u64 {
        match self {
            Pairs::Within(n) => (n as u64) * (n as u64).saturating_sub(1) / 2,
            Pairs::Across(a, b) => a as u64 * b as u64,
        }
    }
}

/// One pair's result.
#[derive(Debug, Clone, PartialEq)]
pub struct PairResult<T> {
    pub a: usize,
    pub b: usize,
    pub value: T,
}

/// How to run: block size (volumes per side held at once, at least 1) and thread count.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub block: usize,
    pub threads: usize,
}

/// `f(0..n)` on up to `threads` scoped threads, results in index order; `done(1)` after each.
/// The first error in index order is returned.
pub fn parallel_map<T: Send, E: Send>(
    n: usize,
    threads: usize,
    f: &(dyn Fn(usize) -> Result<T, E> + Sync),
    done: &(dyn Fn(u64) + Sync),
) -> Result<Vec<T>, E> {
    let slots: Vec<Mutex<Option<Result<T, E>>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1).min(n.max(1)) {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n {
                    break;
                }
                let r = f(k);
                if let Ok(mut slot) = slots[k].lock() {
                    *slot = Some(r);
                }
                done(1);
            });
        }
    });
    let mut out = Vec::with_capacity(n);
    for slot in slots {
        match slot.into_inner().ok().flatten() {
            Some(Ok(v)) => out.push(v),
            Some(Err(e)) => return Err(e),
            None => unreachable!("every index below the counter's end is computed"),
        }
    }
    Ok(out)
}

/// Loads the volumes `range` of `side` on up to `threads` threads, in order.
fn load_block<V: Send, E: Send>(
    side: Side,
    range: std::ops::Range<usize>,
    threads: usize,
    load: &(dyn Fn(Side, usize) -> Result<V, E> + Sync),
) -> Result<Vec<V>, E> {
    parallel_map(
        range.len(),
        threads,
        &|k| load(side, range.start + k),
        &|_| {},
    )
}

/// Runs `metric` on the given index pairs of two loaded blocks (offsets `a0`, `b0`).
#[allow(clippy::too_many_arguments)]
fn run_pairs<V: Sync, T: Send, E: Send>(
    list: &[(usize, usize)],
    a: &[V],
    a0: usize,
    b: &[V],
    b0: usize,
    threads: usize,
    metric: &(dyn Fn(&V, &V) -> Result<T, E> + Sync),
    done: &(dyn Fn(u64) + Sync),
) -> Result<Vec<PairResult<T>>, E> {
    let values = parallel_map(
        list.len(),
        threads,
        &|k| {
            let (i, j) = list[k];
            metric(&a[i - a0], &b[j - b0])
        },
        done,
    )?;
    Ok(values
        .into_iter()
        .zip(list)
        .map(|(value, &(a, b))| PairResult { a, b, value })
        .collect())
}

/// Evaluates `metric` on every pair of `pairs`, in the order `(a, b)` ascending; `done(k)` is
/// called as pairs finish (for a progress bar). The first error (in pair order) is returned.
pub fn for_each_pair<V: Send + Sync, T: Send, E: Send>(
    pairs: Pairs,
    schedule: Schedule,
    load: &(dyn Fn(Side, usize) -> Result<V, E> + Sync),
    metric: &(dyn Fn(&V, &V) -> Result<T, E> + Sync),
    done: &(dyn Fn(u64) + Sync),
) -> Result<Vec<PairResult<T>>, E> {
    let block = schedule.block.max(1);
    let (na, nb, within) = match pairs {
        Pairs::Within(n) => (n, n, true),
        Pairs::Across(a, b) => (a, b, false),
    };
    let blocks =
        |n: usize| (0..n.div_ceil(block)).map(move |k| k * block..((k + 1) * block).min(n));
    let mut out = Vec::new();
    for ra in blocks(na) {
        let va = load_block(Side::A, ra.clone(), schedule.threads, load)?;
        for rb in blocks(nb) {
            if within && rb.end <= ra.start {
                continue;
            }
            let list: Vec<(usize, usize)> = ra
                .clone()
                .flat_map(|i| rb.clone().map(move |j| (i, j)))
                .filter(|&(i, j)| !within || i < j)
                .collect();
            if list.is_empty() {
                continue;
            }
            let same = within && rb == ra;
            let loaded;
            let vb: &[V] = if same {
                &va
            } else {
                loaded = load_block(
                    if within { Side::A } else { Side::B },
                    rb.clone(),
                    schedule.threads,
                    load,
                )?;
                &loaded
            };
            out.extend(run_pairs(
                &list,
                &va,
                ra.start,
                vb,
                rb.start,
                schedule.threads,
                metric,
                done,
            )?);
        }
    }
    out.sort_by_key(|r| (r.a, r.b));
    Ok(out)
}

/// Mean and sample standard deviation (`n - 1`; 0 for one value) of `values`.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n as f64 - 1.0);
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn visits_every_pair_once_for_any_block_size() {
        for block in [1, 2, 3, 7, 100] {
            let loads = AtomicU64::new(0);
            let done = AtomicU64::new(0);
            let load = |side: Side, i: usize| -> Result<(Side, usize), ()> {
                loads.fetch_add(1, Ordering::Relaxed);
                Ok((side, i))
            };
            let metric = |a: &(Side, usize), b: &(Side, usize)| -> Result<(usize, usize), ()> {
                assert_eq!((a.0, b.0), (Side::A, Side::A));
                Ok((a.1, b.1))
            };
            let r = for_each_pair(
                Pairs::Within(7),
                Schedule { block, threads: 3 },
                &load,
                &metric,
                &|k| {
                    done.fetch_add(k, Ordering::Relaxed);
                },
            )
            .unwrap();
            let want: Vec<(usize, usize)> = (0..7)
                .flat_map(|i| (i + 1..7).map(move |j| (i, j)))
                .collect();
            assert_eq!(
                r.iter().map(|p| p.value).collect::<Vec<_>>(),
                want,
                "block {block}"
            );
            assert_eq!(done.load(Ordering::Relaxed), 21);
            let r = for_each_pair(
                Pairs::Across(3, 4),
                Schedule { block, threads: 2 },
                &load,
                &|a, b| Ok((a.0, b.0, a.1, b.1)),
                &|_| {},
            )
            .unwrap();
            assert_eq!(r.len(), 12);
            assert!(r.iter().all(|p| p.value == (Side::A, Side::B, p.a, p.b)));
        }
    }

    #[test]
    fn the_first_error_is_returned() {
        let load = |_: Side, i: usize| {
            if i == 4 {
                Err(format!("volume {i}"))
            } else {
                Ok(i)
            }
        };
        let e = for_each_pair(
            Pairs::Within(6),
            Schedule {
                block: 2,
                threads: 2,
            },
            &load,
            &|a, b| Ok(a + b),
            &|_| {},
        )
        .unwrap_err();
        assert_eq!(e, "volume 4");
        assert_eq!(mean_std(&[1.0, 3.0]), (2.0, 2f64.sqrt()));
    }
}
