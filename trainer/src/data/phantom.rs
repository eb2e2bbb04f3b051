//! Procedural FLAIR-like brain phantoms standing in for BraTS: scalp, skull, CSF, cortex (grey
//! matter with folds), white matter, lateral ventricles and a FLAIR-bright lesion with oedema,
//! with smooth random shape variation; four BraTS-like contrasts (FLAIR, T1w, T1gd, T2w) and a
//! label map. Everything is a pure function of the seed. Also writes a Task01-shaped dataset.

use std::path::{Path, PathBuf};

use super::affine::Affine;
use super::error::{DataError, Result};
use super::nifti_io::write_image;
use super::rng::SplitMix64;
use super::volume::Volume;

/// Task01's channel names, in file order (channel 0 is FLAIR).
pub const MODALITIES: [&str; 4] = ["FLAIR", "T1w", "t1gd", "T2w"];

/// Tissue classes of a phantom voxel (the label map uses BraTS codes: 1 oedema, 2 non-enhancing
/// core, 3 enhancing rim; tissues are 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tissue {
    Background = 0,
    Scalp,
    Skull,
    Csf,
    Grey,
    White,
    Ventricle,
    Oedema,
    Core,
    Rim,
}

/// Mean intensity of each tissue per modality (FLAIR, T1w, T1gd, T2w), arbitrary units ~0..1.
const CONTRAST: [[f32; 4]; 10] = [
    [0.0, 0.0, 0.0, 0.0],     // background
    [0.45, 0.85, 0.85, 0.5],  // scalp (fat)
    [0.04, 0.05, 0.05, 0.05], // skull
    [0.08, 0.15, 0.15, 1.0],  // CSF: suppressed on FLAIR
    [0.66, 0.55, 0.57, 0.62], // grey matter
    [0.44, 0.78, 0.8, 0.42],  // white matter
    [0.06, 0.12, 0.12, 1.0],  // ventricles
    [0.95, 0.5, 0.52, 0.85],  // oedema: FLAIR bright
    [0.7, 0.3, 0.35, 0.8],    // non-enhancing core
    [0.82, 0.45, 1.0, 0.7],   // enhancing rim
];

/// Size and voxel spacing of a phantom.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhantomOptions {
    /// Volume shape (x, y, z); BraTS is 240 x 240 x 155.
    pub dims: [usize; 3],
    /// Isotropic voxel size in mm (BraTS: 1).
    pub spacing: f64,
    /// Include a lesion (tumour core, enhancing rim, oedema).
    pub lesion: bool,
}

impl Default for PhantomOptions {
    fn default() -> Self {
        PhantomOptions {
            dims: [240, 240, 155],
            spacing: 1.0,
            lesion: true,
        }
    }
}

/// One phantom: the four contrasts (FLAIR first), BraTS-coded labels and the tissue map.
#[derive(Debug, Clone)]
pub struct Phantom {
    pub modalities: Vec<Volume>,
    /// 0 none, 1 oedema, 2 non-enhancing core, 3 enhancing rim; C order like the volumes.
    pub labels: Vec<u8>,
    pub tissue: Vec<Tissue>,
    pub dims: [usize; 3],
}

/// A smooth random function on the unit sphere: sum of a few low-frequency waves.
struct SphereWaves {
    waves: Vec<([f64; 3], f64, f64)>,
}

impl SphereWaves {
    fn new(rng: &mut SplitMix64, n: usize, freq: f64, amplitude: f64) -> Self {
        let waves = (0..n)
            .map(|_| {
                let d = [rng.normal(), rng.normal(), rng.normal()];
                let norm = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt().max(1e-9);
                let f = freq * rng.uniform(0.6, 1.4);
                (
                    [d[0] / norm * f, d[1] / norm * f, d[2] / norm * f],
                    rng.uniform(0.0, std::f64::consts::TAU),
                    amplitude * rng.uniform(0.3, 1.0),
                )
            })
            .collect();
        SphereWaves { waves }
    }

    #[inline]
    fn at(&self, p: [f64; 3]) -> f64 {
        self.waves
            .iter()
            .map(|(k, ph, a)| a * (k[0] * p[0] + k[1] * p[1] + k[2] * p[2] + ph).sin())
            .sum()
    }
}

/// A counter-based hash to uniform [0, 1): voxel noise independent of iteration order.
#[inline]
fn hash01(seed: u64, i: u64) -> f64 {
    let mut g = SplitMix64::new(seed ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03));
    g.next_f64()
}

/// Gaussian noise for voxel i (Box-Muller on two hashes).
#[inline]
fn gauss(seed: u64, i: u64) -> f64 {
    let u1 = hash01(seed, 2 * i).max(1e-300);
    let u2 = hash01(seed, 2 * i + 1);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// The affine of a phantom: LPS-like axes (x to the left, y posterior), origin at the centre,
/// like many scanner exports, so loading it exercises reorientation.
pub fn phantom_affine(opt: &PhantomOptions) -> Affine {
    let s = opt.spacing;
    let c = |d: usize| (d as f64 - 1.0) / 2.0 * s;
    [
        [-s, 0.0, 0.0, c(opt.dims[0])],
        [0.0, -s, 0.0, c(opt.dims[1])],
        [0.0, 0.0, s, -c(opt.dims[2])],
        [0.0, 0.0, 0.0, 1.0],
    ]
}

/// Make one phantom. Deterministic per (seed, options). Fails only on a degenerate size.
pub fn make_phantom(seed: u64, opt: &PhantomOptions) -> Result<Phantom> {
    let [nx, ny, nz] = opt.dims;
    if nx < 8 || ny < 8 || nz < 8 || nx.saturating_mul(ny).saturating_mul(nz) > 1 << 30 {
        return Err(DataError::InvalidSetting(format!(
            "phantom size {:?}: each side must be >= 8, at most 2^30 voxels",
            opt.dims
        )));
    }
    if !(opt.spacing.is_finite() && opt.spacing > 0.0) {
        return Err(DataError::InvalidSetting(format!(
            "phantom spacing {} must be positive",
            opt.spacing
        )));
    }
    let mut rng = SplitMix64::new(seed ^ 0x5EED_B2A7_5000_0001);
    let s = opt.spacing;
    // head semi-axes in mm, fitted inside the field of view like a BraTS scan
    let fov = [nx as f64 * s, ny as f64 * s, nz as f64 * s];
    let head = [
        fov[0] * 0.5 * rng.uniform(0.68, 0.78),
        fov[1] * 0.5 * rng.uniform(0.80, 0.88),
        fov[2] * 0.5 * rng.uniform(0.80, 0.9),
    ];
    let centre = [
        rng.uniform(-0.03, 0.03) * fov[0],
        rng.uniform(-0.03, 0.03) * fov[1],
        rng.uniform(-0.02, 0.02) * fov[2],
    ];
    let shape = SphereWaves::new(&mut rng, 5, 2.5, 0.035);
    let cortex = SphereWaves::new(&mut rng, 4, 3.0, 0.03);
    // cortical folding: waves in mm space (~9-16 mm wavelength)
    let fold = SphereWaves::new(&mut rng, 9, std::f64::consts::TAU / 12.0, 1.0);
    let mean_r = (head[0] + head[1] + head[2]) / 3.0;
    let scalp_mm = rng.uniform(4.0, 7.0) / mean_r;
    let skull_mm = rng.uniform(5.0, 8.0) / mean_r;
    let csf_mm = rng.uniform(2.0, 4.0) / mean_r;
    let cortex_mm = rng.uniform(8.0, 12.0) / mean_r;
    let brain_r = 1.0 - scalp_mm - skull_mm - csf_mm;
    // ventricles: two ellipsoids beside the midline, in head-normalised units
    let v_half = [rng.uniform(0.06, 0.1), rng.uniform(0.25, 0.34), rng.uniform(0.12, 0.18)];
    let v_off = [rng.uniform(0.07, 0.1), rng.uniform(-0.05, 0.05), rng.uniform(0.02, 0.1)];
    // lesion: inside the white matter, one hemisphere
    let lesion = if opt.lesion {
        let dir = [
            rng.uniform(0.2, 0.45) * if rng.next_f64() < 0.5 { -1.0 } else { 1.0 },
            rng.uniform(-0.4, 0.4),
            rng.uniform(-0.25, 0.35),
        ];
        let r = rng.uniform(0.08, 0.18);
        Some((dir, r, rng.uniform(1.6, 2.4), SphereWaves::new(&mut rng, 4, 3.0, 0.15)))
    } else {
        None
    };
    let bias = [
        rng.uniform(-0.08, 0.08),
        rng.uniform(-0.08, 0.08),
        rng.uniform(-0.08, 0.08),
    ];
    let noise_seed = rng.next_u64();
    let n = nx * ny * nz;
    let half = [
        (nx as f64 - 1.0) / 2.0,
        (ny as f64 - 1.0) / 2.0,
        (nz as f64 - 1.0) / 2.0,
    ];
    // one voxel: its tissue and the four contrasts before blur and noise
    let voxel = |x: usize, y: usize, z: usize| -> (Tissue, [f32; 4]) {
        let i = (x * ny + y) * nz + z;
        // mm position relative to the head centre; head-normalised coordinates q
        let p = [
            (x as f64 - half[0]) * s - centre[0],
            (y as f64 - half[1]) * s - centre[1],
            (z as f64 - half[2]) * s - centre[2],
        ];
        let q = [p[0] / head[0], p[1] / head[1], p[2] / head[2]];
        let rq = (q[0] * q[0] + q[1] * q[1] + q[2] * q[2]).sqrt();
        let u = if rq > 1e-9 {
            [q[0] / rq, q[1] / rq, q[2] / rq]
        } else {
            [0.0, 0.0, 1.0]
        };
        let r = rq / (1.0 + shape.at(u));
        let t = if r > 1.0 {
            Tissue::Background
        } else if r > 1.0 - scalp_mm {
            Tissue::Scalp
        } else if r > 1.0 - scalp_mm - skull_mm {
            Tissue::Skull
        } else if r > brain_r * (1.0 + cortex.at(u) * 0.3) {
            Tissue::Csf
        } else {
            let folds = fold.at(p) / 3.5; // ~[-1, 1]
            let wm_edge = brain_r - cortex_mm * (1.0 + 0.6 * folds);
            let vq = [
                (q[0].abs() - v_off[0]) / v_half[0],
                (q[1] - v_off[1]) / v_half[1],
                (q[2] - v_off[2]) / v_half[2],
            ];
            let in_vent = vq[0] * vq[0] + vq[1] * vq[1] + vq[2] * vq[2] < 1.0;
            // sulci: CSF fills the deepest folds near the surface
            if r > brain_r - cortex_mm * (0.3 + 0.7 * folds) && folds > 0.45 {
                Tissue::Csf
            } else if in_vent {
                Tissue::Ventricle
            } else if r > wm_edge {
                Tissue::Grey
            } else {
                Tissue::White
            }
        };
        let mut t = t;
        if let Some((c, lr, oedema, ref wobble)) = lesion {
            if matches!(t, Tissue::White | Tissue::Grey | Tissue::Ventricle | Tissue::Csf) && r <= brain_r {
                let d = [q[0] - c[0], q[1] - c[1], q[2] - c[2]];
                let dr = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
                let du = if dr > 1e-9 {
                    [d[0] / dr, d[1] / dr, d[2] / dr]
                } else {
                    [0.0, 0.0, 1.0]
                };
                let rel = dr / (lr * (1.0 + wobble.at(du)));
                if rel < 0.7 {
                    t = Tissue::Core;
                } else if rel < 1.0 {
                    t = Tissue::Rim;
                } else if rel < oedema && t != Tissue::Csf {
                    t = Tissue::Oedema;
                }
            }
        }
        if t == Tissue::Background {
            return (t, [0.0; 4]);
        }
        let gain = 1.0 + bias[0] * q[0] + bias[1] * q[1] + bias[2] * q[2];
        let texture = 1.0 + 0.03 * gauss(noise_seed, i as u64);
        let c = CONTRAST[t as usize];
        (t, [0, 1, 2, 3].map(|m| (c[m] as f64 * gain * texture) as f32))
    };
    let mut tissue = vec![Tissue::Background; n];
    let mut mods: Vec<Vec<f32>> = (0..4).map(|_| vec![0f32; n]).collect();
    // slabs of x across the cores; every voxel is a pure function of (seed, position)
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).clamp(1, nx);
    let rows = nx.div_ceil(threads);
    std::thread::scope(|sc| {
        let mut t_rest: &mut [Tissue] = &mut tissue;
        let mut m_rest: Vec<&mut [f32]> = mods.iter_mut().map(|m| m.as_mut_slice()).collect();
        let mut x0 = 0;
        while x0 < nx {
            let take = rows.min(nx - x0) * ny * nz;
            let (t_chunk, t_tail) = std::mem::take(&mut t_rest).split_at_mut(take);
            t_rest = t_tail;
            let mut m_chunks = Vec::with_capacity(4);
            for r in m_rest.iter_mut() {
                let (c, tail) = std::mem::take(r).split_at_mut(take);
                *r = tail;
                m_chunks.push(c);
            }
            let voxel = &voxel;
            let first = x0 * ny * nz;
            sc.spawn(move || {
                for (k, t) in t_chunk.iter_mut().enumerate() {
                    let i = first + k;
                    let (tt, vals) = voxel(i / (ny * nz), (i / nz) % ny, i % nz);
                    *t = tt;
                    for (c, v) in m_chunks.iter_mut().zip(vals) {
                        c[k] = v;
                    }
                }
            });
            x0 += rows;
        }
    });
    let labels: Vec<u8> = tissue
        .iter()
        .map(|t| match t {
            Tissue::Oedema => 1,
            Tissue::Core => 2,
            Tissue::Rim => 3,
            _ => 0,
        })
        .collect();
    // partial-volume blur (one 3-tap pass per axis), then scanner noise and scaling to ~0..1000
    let affine = phantom_affine(opt);
    let dims = opt.dims;
    std::thread::scope(|sc| {
        for (m, d) in mods.iter_mut().enumerate() {
            sc.spawn(move || {
                blur3(d, dims);
                for (i, v) in d.iter_mut().enumerate() {
                    let noisy = *v as f64 + 0.012 * gauss(noise_seed.wrapping_add(1 + m as u64), i as u64);
                    *v = (noisy.abs() * 1000.0) as f32;
                }
            });
        }
    });
    let modalities = mods.into_iter().map(|data| Volume { dims, data, affine }).collect();
    Ok(Phantom {
        modalities,
        labels,
        tissue,
        dims: opt.dims,
    })
}

/// [1 2 1]/4 smoothing along each axis (edges clamped).
fn blur3(d: &mut [f32], dims: [usize; 3]) {
    let [nx, ny, nz] = dims;
    let strides = [ny * nz, nz, 1];
    for (a, &stride) in strides.iter().enumerate() {
        let len = dims[a];
        let src = d.to_vec();
        for x in 0..nx {
            for y in 0..ny {
                for z in 0..nz {
                    let i = (x * ny + y) * nz + z;
                    let pos = [x, y, z][a];
                    let lo = if pos > 0 { src[i - stride] } else { src[i] };
                    let hi = if pos + 1 < len { src[i + stride] } else { src[i] };
                    d[i] = 0.25 * lo + 0.5 * src[i] + 0.25 * hi;
                }
            }
        }
    }
}

/// The FLAIR channel of one phantom (what the trainer uses for demos and tests).
pub fn make_flair(seed: u64, opt: &PhantomOptions) -> Result<Volume> {
    let mut p = make_phantom(seed, opt)?;
    Ok(p.modalities.swap_remove(0))
}

/// Seed of the i-th phantom of a dataset made with `seed`.
pub fn case_seed(seed: u64, index: usize) -> u64 {
    let mut g = SplitMix64::new(seed.wrapping_add((index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    g.next_u64()
}

/// Write a Task01-shaped dataset: `dataset.json`, `imagesTr/BRATS_NNN.nii.gz` (4-D int16, FLAIR
/// first) and, with `labels`, `labelsTr/BRATS_NNN.nii.gz` (uint8). `progress` is called after
/// each case. Returns the image paths.
pub fn write_phantom_dataset(
    out: &Path,
    count: usize,
    seed: u64,
    opt: &PhantomOptions,
    labels: bool,
    mut progress: impl FnMut(usize, &Path),
) -> Result<Vec<PathBuf>> {
    if count == 0 {
        return Err(DataError::InvalidSetting("phantom count must be at least 1".into()));
    }
    let images = out.join("imagesTr");
    let labels_dir = out.join("labelsTr");
    std::fs::create_dir_all(&images).map_err(|e| DataError::io(&images, e))?;
    if labels {
        std::fs::create_dir_all(&labels_dir).map_err(|e| DataError::io(&labels_dir, e))?;
    }
    let mut paths = Vec::with_capacity(count);
    let mut training = Vec::with_capacity(count);
    let affine = phantom_affine(opt);
    for i in 0..count {
        let name = format!("BRATS_{:03}.nii.gz", i + 1);
        let p = make_phantom(case_seed(seed, i), opt)?;
        let [nx, ny, nz] = p.dims;
        // channel-major [C, X, Y, Z]: each modality's C-order volume in turn
        let arr: Vec<i16> = p
            .modalities
            .iter()
            .flat_map(|vol| vol.data.iter().map(|v| v.round().clamp(0.0, i16::MAX as f32) as i16))
            .collect();
        let img_path = images.join(&name);
        write_image(
            &img_path,
            [nx, ny, nz],
            p.modalities.len(),
            &arr,
            &affine,
            &format!("brats-ldm phantom seed {seed} case {i}"),
        )?;
        drop(arr);
        let mut entry = serde_json::json!({ "image": format!("./imagesTr/{name}") });
        if labels {
            write_image(&labels_dir.join(&name), [nx, ny, nz], 1, &p.labels, &affine, "brats-ldm phantom labels")?;
            entry["label"] = serde_json::json!(format!("./labelsTr/{name}"));
        }
        training.push(entry);
        progress(i, &img_path);
        paths.push(img_path);
    }
    let json = serde_json::json!({
        "name": "BRATS-phantom",
        "description": "Procedural FLAIR-like brain phantoms made by brats-ldm (not patient data)",
        "reference": "brats-ldm phantom generator",
        "licence": "CC0",
        "tensorImageSize": "4D",
        "modality": { "0": MODALITIES[0], "1": MODALITIES[1], "2": MODALITIES[2], "3": MODALITIES[3] },
        "labels": { "0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour" },
        "numTraining": count,
        "numTest": 0,
        "phantom": { "seed": seed, "dims": opt.dims, "spacing": opt.spacing },
        "training": training,
        "test": [],
    });
    let text = serde_json::to_string_pretty(&json).map_err(|e| DataError::InvalidSetting(e.to_string()))?;
    let dj = out.join("dataset.json");
    ldm_io::atomic::write_bytes(&dj, text.as_bytes()).map_err(|e| DataError::io(&dj, e))?;
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_phantom_has_every_tissue() {
        let p = make_phantom(
            7,
            &PhantomOptions {
                dims: [64, 64, 48],
                spacing: 3.75,
                lesion: true,
            },
        )
        .unwrap();
        for t in [
            Tissue::Background,
            Tissue::Scalp,
            Tissue::Skull,
            Tissue::Csf,
            Tissue::Grey,
            Tissue::White,
            Tissue::Ventricle,
            Tissue::Oedema,
        ] {
            assert!(p.tissue.contains(&t), "{t:?} missing");
        }
    }
}
