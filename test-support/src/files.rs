//! Fixture paths, the two file readers (`.npy`, `.safetensors`) and a `.npy` writer, little-endian
//! f32 only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// name -> (shape, values), as read from a `.safetensors` file.
pub type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// `tests/fixtures` at the repository root.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// A file under `tests/fixtures/monai` (the ground truth produced by MONAI).
pub fn monai(rel: &str) -> PathBuf {
    fixtures_dir().join("monai").join(rel)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f32s(path: &Path, bytes: &[u8]) -> Vec<f32> {
    assert!(
        bytes.chunks_exact(4).remainder().is_empty(),
        "{}: {} data bytes are not whole f32 values",
        path.display(),
        bytes.len()
    );
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Reads a `.npy` file of little-endian f32 in C order with the project's reader
/// (`ldm_io::npy`); returns (shape, data). Any other dtype or order, or a data length that
/// disagrees with the shape, fails the test.
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let a = ldm_io::npy::read_f32(path).unwrap_or_else(|e| panic!("{e}"));
    (a.shape, a.data)
}

/// Writes `data` (C order, little-endian f32) with `shape` as a format 1.0 `.npy` file with the
/// project's writer (`ldm_io::npy`).
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) {
    ldm_io::atomic::write_file(path, |w| ldm_io::npy::write_f32(w, shape, data))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Reads every tensor of a `.safetensors` file, which must all be F32: name -> (shape, data).
pub fn read_safetensors(path: &Path) -> Tensors {
    let b = read(path);
    let p = path.display();
    assert!(b.len() >= 8, "{p}: too short for a safetensors header");
    let n = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    let end = usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_add(8))
        .filter(|&e| e <= b.len())
        .unwrap_or_else(|| panic!("{p}: header length {n} past the end"));
    let header: serde_json::Value = serde_json::from_slice(&b[8..end]).unwrap_or_else(|e| panic!("{p}: header: {e}"));
    let entries = header.as_object().unwrap_or_else(|| panic!("{p}: header is not a JSON object"));
    let data = &b[end..];
    let usizes = |name: &str, v: &serde_json::Value, field: &str| -> Vec<usize> {
        v[field]
            .as_array()
            .unwrap_or_else(|| panic!("{p}: {name}: no {field} array"))
            .iter()
            .map(|d| {
                d.as_u64()
                    .and_then(|d| usize::try_from(d).ok())
                    .unwrap_or_else(|| panic!("{p}: {name}: bad {field} entry {d}"))
            })
            .collect()
    };
    let mut out = Tensors::new();
    for (name, v) in entries {
        if name == "__metadata__" {
            continue;
        }
        assert_eq!(v["dtype"], "F32", "{p}: {name} is not F32");
        let shape = usizes(name, v, "shape");
        let off = usizes(name, v, "data_offsets");
        assert!(
            off.len() == 2 && off[0] <= off[1] && off[1] <= data.len(),
            "{p}: {name}: data_offsets {off:?} out of range"
        );
        let vals = f32s(path, &data[off[0]..off[1]]);
        assert_eq!(
            vals.len(),
            shape.iter().product::<usize>(),
            "{p}: {name}: data length does not match shape {shape:?}"
        );
        out.insert(name.clone(), (shape, vals));
    }
    out
}

/// Relative L2 distance `|a - b| / |b|` (the denominator floored at 1e-30 so an all-zero
/// reference with an equal `a` gives 0).
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_fixture_npy_and_checkpoint() {
        let (shape, data) = read_npy(&monai("pipeline/noise.npy"));
        assert_eq!(shape, vec![1, 8, 8, 8, 4]);
        assert_eq!(data.len(), 8 * 8 * 8 * 4);
        let t = read_safetensors(&monai("autoencoder/autoencoder.safetensors"));
        let (s, v) = &t["post_quant_conv.conv.weight"];
        assert_eq!(s, &vec![8, 8, 1, 1, 1]);
        assert_eq!(v.len(), 64);
    }

    #[test]
    #[should_panic(expected = "dtype '<f8' is not supported")]
    fn refuses_other_dtypes() {
        let dir = std::env::temp_dir().join(format!("ldm-test-support-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f8.npy");
        // padded so that magic + version + length + header = 128 bytes, as numpy writes it
        let header = format!("{:<117}\n", "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }");
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(&1.0f64.to_le_bytes());
        std::fs::write(&path, b).unwrap();
        read_npy(&path);
    }

    #[test]
    fn write_npy_round_trips() {
        let dir = std::env::temp_dir().join(format!("ldm-test-support-rt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for shape in [vec![3], vec![1, 2, 3, 2]] {
            let data: Vec<f32> = (0..shape.iter().product::<usize>()).map(|i| i as f32 * 0.5 - 1.0).collect();
            let path = dir.join("rt.npy");
            write_npy(&path, &shape, &data);
            assert_eq!(std::fs::read(&path).unwrap().len() % 4, 0);
            assert_eq!(read_npy(&path), (shape, data));
        }
    }

    #[test]
    fn rel_l2_is_relative() {
        assert_eq!(rel_l2(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        assert!((rel_l2(&[0.0, 2.0], &[0.0, 1.0]) - 1.0).abs() < 1e-12);
    }
}
