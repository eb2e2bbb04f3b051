//! Test helpers: a seeded RNG, finite-difference gradient checks, and small readers for the
//! MONAI fixtures (`.npy` little-endian f32 C-order, `.safetensors` f32).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// SplitMix64: deterministic test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }
    pub fn index(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// Relative L2 distance `|a - b| / |b|`.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// Finite-difference check of a layer. `f(p, x)` is the forward, `b(p, g, x, dy)` the backward
/// returning dx and accumulating parameter gradients into g. The scalar checked is
/// `L = sum(y * r)` for a fixed random r. Samples up to `samples` coordinates of x and of p and
/// returns the worst relative L2 error (analytic vs central differences) of the two.
pub fn gradcheck<F, B>(p: &[f32], x: &[f32], f: F, b: B, samples: usize, seed: u64) -> (f64, f64)
where
    F: Fn(&[f32], &[f32]) -> Vec<f32>,
    B: Fn(&[f32], &mut [f32], &[f32], &[f32]) -> Vec<f32>,
{
    let mut rng = Rng(seed);
    let y = f(p, x);
    let r = rng.vec(y.len(), 1.0);
    let mut g = vec![0.0f32; p.len()];
    let dx = b(p, &mut g, x, &r);
    assert_eq!(dx.len(), x.len());
    let eps = 1e-2f32;
    let mut check = |which: usize, n: usize| -> f64 {
        if n == 0 {
            return 0.0;
        }
        let (mut ana, mut num) = (Vec::new(), Vec::new());
        let idx: Vec<usize> = if n <= samples { (0..n).collect() } else { (0..samples).map(|_| rng.index(n)).collect() };
        for i in idx {
            let (mut pp, mut xx) = (p.to_vec(), x.to_vec());
            let v = if which == 0 { &mut xx } else { &mut pp };
            let orig = v[i];
            v[i] = orig + eps;
            let lp = dot(&f(&pp, &xx), &r);
            let v = if which == 0 { &mut xx } else { &mut pp };
            v[i] = orig - eps;
            let lm = dot(&f(&pp, &xx), &r);
            num.push(((lp - lm) / (2.0 * eps as f64)) as f32);
            ana.push(if which == 0 { dx[i] } else { g[i] });
        }
        rel_l2(&ana, &num)
    };
    let ex = check(0, x.len());
    let ep = check(1, p.len());
    (ex, ep)
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/monai")
}

/// Reads a little-endian f32 C-order `.npy`; returns (shape, data).
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..6], b"\x93NUMPY", "{}: not npy", path.display());
    let (hlen, start) = if b[6] == 1 {
        (u16::from_le_bytes([b[8], b[9]]) as usize, 10)
    } else {
        (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
    };
    let header = std::str::from_utf8(&b[start..start + hlen]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{}: not <f4", path.display());
    assert!(header.contains("'fortran_order': False"));
    let sh = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let shape: Vec<usize> = sh.split(',').filter(|t| !t.trim().is_empty()).map(|t| t.trim().parse().unwrap()).collect();
    let data: Vec<f32> = b[start + hlen..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(data.len(), shape.iter().product::<usize>());
    (shape, data)
}

/// Reads every F32 tensor of a `.safetensors` file: name -> (shape, data).
pub fn read_safetensors(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let data = &b[8 + n..];
    let mut out = HashMap::new();
    for (k, v) in header.as_object().unwrap() {
        if k == "__metadata__" {
            continue;
        }
        assert_eq!(v["dtype"], "F32", "{k}");
        let shape: Vec<usize> = v["shape"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap() as usize).collect();
        let off: Vec<usize> = v["data_offsets"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap() as usize).collect();
        let vals = data[off[0]..off[1]].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        out.insert(k.clone(), (shape, vals));
    }
    out
}
