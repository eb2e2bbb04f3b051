//! The `--init-noise` file: read and checked (float32 `[C,D,H,W]` or `[1,C,D,H,W]`, every value
//! finite and within standard normal noise), the stem its outputs are named after, and the
//! fingerprint that names its run in the NIfTI header.

use crate::output::npy;
use anyhow::{bail, Context};
use std::path::Path;

/// `--init-noise` values beyond this magnitude are not standard normal noise (|x| > 10 has
/// probability about 1.5e-23 per value) and are refused before sampling.
const INIT_NOISE_LIMIT: f32 = 10.0;

/// Reads `--init-noise`: float32 `[C,D,H,W]` or `[1,C,D,H,W]`, all values finite.
pub(super) fn read_init_noise(path: &Path) -> anyhow::Result<([usize; 4], Vec<f32>)> {
    let a = npy::read_f32(path).context("cannot read --init-noise")?;
    let shape: [usize; 4] = match a.shape.as_slice() {
        [c, d, h, w] | [1, c, d, h, w] => [*c, *d, *h, *w],
        other => bail!(
            "--init-noise {}: shape {other:?} is not a latent: expected [C, D, H, W] or [1, C, D, H, W]",
            path.display()
        ),
    };
    if shape.contains(&0) {
        bail!(
            "--init-noise {}: shape {:?} has an empty dimension",
            path.display(),
            a.shape
        );
    }
    if let Some(i) = a.data.iter().position(|v| !v.is_finite()) {
        bail!(
            "--init-noise {}: value {i} is not finite ({})",
            path.display(),
            a.data[i]
        );
    }
    if let Some(i) = a.data.iter().position(|v| v.abs() > INIT_NOISE_LIMIT) {
        bail!(
            "--init-noise {}: value {i} is {:e}, far outside standard normal noise (|x| <= {INIT_NOISE_LIMIT})",
            path.display(),
            a.data[i]
        );
    }
    Ok((shape, a.data))
}

/// File-name stem of an `--init-noise` run: the noise file's name, restricted to safe characters.
pub(super) fn init_stem(path: &Path) -> String {
    let stem = path
        .file_name()
        .and_then(|s| s.to_str())
        .map(|s| s.trim_end_matches(".npy").to_string())
        .unwrap_or_default();
    let stem: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.is_empty() {
        "noise".into()
    } else {
        stem
    }
}

/// FNV-1a 64 of the initial latent's bytes: names an `--init-noise` run in the NIfTI header.
pub(super) fn fnv1a(data: &[f32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in data {
        for b in v.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_noise_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, shape: &[usize], data: &[f32]| {
            let p = dir.path().join(name);
            let mut bytes = Vec::new();
            npy::write_f32(&mut bytes, shape, data).unwrap();
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let ok = write("a.npy", &[1, 2, 2, 2, 2], &[0.5; 16]);
        assert_eq!(read_init_noise(&ok).unwrap().0, [2, 2, 2, 2]);
        let three = write("b.npy", &[2, 2, 4], &[0.5; 16]);
        assert!(read_init_noise(&three).is_err());
        let batch2 = write("c.npy", &[2, 1, 2, 2, 2], &[0.5; 16]);
        assert!(read_init_noise(&batch2).is_err());
        let mut nan = vec![0.0; 16];
        nan[3] = f32::NAN;
        let nan = write("d.npy", &[1, 2, 2, 2, 2], &nan);
        assert!(read_init_noise(&nan)
            .unwrap_err()
            .to_string()
            .contains("value 3"));
        let mut huge = vec![0.0; 16];
        huge[5] = 1e37;
        let huge = write("e.npy", &[1, 2, 2, 2, 2], &huge);
        let e = read_init_noise(&huge).unwrap_err().to_string();
        assert!(e.contains("value 5") && e.contains("1e37"), "{e}");
        let edge = write("f.npy", &[1, 2, 2, 2, 2], &[-INIT_NOISE_LIMIT; 16]);
        assert!(read_init_noise(&edge).is_ok());
        let real =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/monai/pipeline/noise.npy");
        assert_eq!(read_init_noise(&real).unwrap().0, [8, 8, 8, 4]);
        assert_ne!(fnv1a(&[1.0]), fnv1a(&[2.0]));
        assert_eq!(init_stem(Path::new("/a/noise.npy")), "noise");
        assert_eq!(init_stem(Path::new("my noise (2).npy")), "my_noise__2_");
        assert_eq!(init_stem(Path::new("/")), "noise");
    }
}
