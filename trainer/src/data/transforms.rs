//! The bundle's spatial and intensity transforms with MONAI 1.5 semantics: `Orientation("RAS")`,
//! `Spacing(pixdim, bilinear, padding border, align_corners=False, float64 compute)`,
//! `CenterSpatialCrop` (optionally padding like `ResizeWithPadOrCrop`),
//! `ScaleIntensityRangePercentiles`, and `RandSpatialCrop` with a seeded generator.

use super::affine::{self, Affine};
use super::rng::SplitMix64;
use super::volume::{percentiles, Volume};

/// MONAI `Orientation(axcodes="RAS")`: flip and permute voxel axes so that they point along
/// +R, +A, +S as closely as the affine allows; the affine is updated so world positions stay put.
pub fn orient_ras(v: &Volume) -> Result<Volume, String> {
    let (src, flip) = ras_axes(&v.affine)?;
    if src == [0, 1, 2] && flip == [false; 3] {
        return Ok(v.clone());
    }
    let (dims, new_affine) = ras_geometry(v.dims, &v.affine, src, flip);
    let mut data = vec![0f32; v.data.len()];
    let mut idx = [0usize; 3];
    let mut pos = 0;
    for a in 0..dims[0] {
        for b in 0..dims[1] {
            for c in 0..dims[2] {
                for (o, &p) in [a, b, c].iter().enumerate() {
                    idx[src[o]] = if flip[o] { dims[o] - 1 - p } else { p };
                }
                data[pos] = v.at(idx[0], idx[1], idx[2]);
                pos += 1;
            }
        }
    }
    Ok(Volume {
        dims,
        data,
        affine: new_affine,
    })
}

/// The shape and affine `orient_ras` gives a volume of `dims` with `affine`, without its data.
pub fn ras_grid(dims: [usize; 3], a: &Affine) -> Result<([usize; 3], Affine), String> {
    let (src, flip) = ras_axes(a)?;
    Ok(ras_geometry(dims, a, src, flip))
}

/// For each output axis: the input axis it takes and whether it is flipped.
fn ras_axes(a: &Affine) -> Result<([usize; 3], [bool; 3]), String> {
    let ornt = affine::io_orientation(a)?;
    // out axis o takes input axis src[o]; flipped when the input axis points backwards
    let mut src = [0usize; 3];
    let mut flip = [false; 3];
    for (in_ax, &(out_ax, sign)) in ornt.iter().enumerate() {
        src[out_ax] = in_ax;
        flip[out_ax] = sign < 0;
    }
    Ok((src, flip))
}

/// Output shape and affine of the axis permutation/flips `src`, `flip`.
fn ras_geometry(in_dims: [usize; 3], a: &Affine, src: [usize; 3], flip: [bool; 3]) -> ([usize; 3], Affine) {
    if src == [0, 1, 2] && flip == [false; 3] {
        return (in_dims, *a);
    }
    let dims = [in_dims[src[0]], in_dims[src[1]], in_dims[src[2]]];
    // out index -> in index as an affine M (in = M * out), new affine = old * M
    let mut m = [[0.0; 4]; 4];
    m[3][3] = 1.0;
    for o in 0..3 {
        let i = src[o];
        if flip[o] {
            m[i][o] = -1.0;
            m[i][3] = (in_dims[i] - 1) as f64;
        } else {
            m[i][o] = 1.0;
        }
    }
    (dims, affine::matmul(a, &m))
}

/// The output grid of MONAI `Spacing(pixdim)` (`zoom_affine` + `compute_shape_offset` with
/// scale_extent=False): shape and affine whose origin sits on an input corner voxel centre.
pub fn spacing_grid(dims: [usize; 3], src: &Affine, pixdim: [f64; 3]) -> Result<([usize; 3], Affine), String> {
    let mut dst = affine::zoom_affine(src, pixdim)?;
    let dst_inv = affine::inverse(&dst).ok_or("target affine is singular")?;
    let to_out = affine::matmul(&dst_inv, src);
    let mut corners_out = Vec::with_capacity(8);
    let mut corners_world = Vec::with_capacity(8);
    for ci in 0..8 {
        let p = [0, 1, 2].map(|a| {
            if ci >> (2 - a) & 1 == 1 {
                dims[a] as f64 - 1.0
            } else {
                0.0
            }
        });
        corners_out.push(affine::apply(&to_out, p));
        corners_world.push(affine::apply(src, p));
    }
    let mut shape = [0usize; 3];
    for a in 0..3 {
        let lo = corners_out.iter().map(|c| c[a]).fold(f64::INFINITY, f64::min);
        let hi = corners_out.iter().map(|c| c[a]).fold(f64::NEG_INFINITY, f64::max);
        let n = round_half_even(hi - lo + 1.0);
        if !(n >= 1.0 && n < 1e6) {
            return Err(format!("resampled axis {a} would have {n} voxels"));
        }
        shape[a] = n as usize;
    }
    // origin: the input corner that is smallest along every output axis, else centre alignment
    let mut offset = None;
    for i in 0..8 {
        let ok = (0..3).all(|a| {
            let m = corners_out
                .iter()
                .map(|c| c[a] - corners_out[i][a])
                .fold(f64::INFINITY, f64::min);
            m.abs() <= 1e-8
        });
        if ok {
            offset = Some(corners_world[i]);
            break;
        }
    }
    let offset = offset.unwrap_or_else(|| {
        let mut o = [0.0; 3];
        for (r, or) in o.iter_mut().enumerate() {
            *or = (0..3).map(|c| src[r][c] * dims[c] as f64 / 2.0).sum::<f64>() + src[r][3]
                - (0..3).map(|c| dst[r][c] * shape[c] as f64 / 2.0).sum::<f64>();
        }
        o
    });
    for r in 0..3 {
        dst[r][3] = offset[r];
    }
    Ok((shape, dst))
}

fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// MONAI `Spacing(pixdim, mode="bilinear")`: trilinear resampling onto `spacing_grid`, voxel
/// centres mapped through the affines (align_corners=False), coordinates clamped to the input
/// (padding "border"), computed in f64. Returns the input unchanged when the grid is the same.
pub fn resample_to_spacing(v: &Volume, pixdim: [f64; 3]) -> Result<Volume, String> {
    let (shape, dst) = spacing_grid(v.dims, &v.affine, pixdim)?;
    let src_inv = affine::inverse(&v.affine).ok_or("source affine is singular")?;
    let xform = affine::matmul(&src_inv, &dst);
    // MONAI skips resampling when the grid is unchanged within AFFINE_TOL (1e-3, np.allclose)
    let close = |a: &Affine, b: &Affine| {
        (0..4).all(|i| (0..4).all(|j| (a[i][j] - b[i][j]).abs() <= 1e-3 + 1e-5 * b[i][j].abs()))
    };
    let same = shape == v.dims && (close(&v.affine, &dst) || close(&xform, &affine::identity()));
    if same {
        return Ok(Volume {
            dims: v.dims,
            data: v.data.clone(),
            affine: v.affine,
        });
    }
    let [nx, ny, nz] = v.dims;
    let mut data = vec![0f32; shape[0] * shape[1] * shape[2]];
    let clamp = |c: f64, n: usize| c.max(0.0).min((n - 1) as f64);
    let mut pos = 0;
    for i in 0..shape[0] {
        for j in 0..shape[1] {
            let base = affine::apply(&xform, [i as f64, j as f64, 0.0]);
            for k in 0..shape[2] {
                let kf = k as f64;
                let p = [
                    clamp(base[0] + xform[0][2] * kf, nx),
                    clamp(base[1] + xform[1][2] * kf, ny),
                    clamp(base[2] + xform[2][2] * kf, nz),
                ];
                data[pos] = trilinear(v, p) as f32;
                pos += 1;
            }
        }
    }
    Ok(Volume {
        dims: shape,
        data,
        affine: dst,
    })
}

#[inline]
fn trilinear(v: &Volume, p: [f64; 3]) -> f64 {
    let [nx, ny, nz] = v.dims;
    let x0 = p[0].floor();
    let y0 = p[1].floor();
    let z0 = p[2].floor();
    let (fx, fy, fz) = (p[0] - x0, p[1] - y0, p[2] - z0);
    let (x0, y0, z0) = (x0 as usize, y0 as usize, z0 as usize);
    let x1 = (x0 + 1).min(nx - 1);
    let y1 = (y0 + 1).min(ny - 1);
    let z1 = (z0 + 1).min(nz - 1);
    let g = |x, y, z| v.at(x, y, z) as f64;
    let c00 = g(x0, y0, z0) * (1.0 - fz) + g(x0, y0, z1) * fz;
    let c01 = g(x0, y1, z0) * (1.0 - fz) + g(x0, y1, z1) * fz;
    let c10 = g(x1, y0, z0) * (1.0 - fz) + g(x1, y0, z1) * fz;
    let c11 = g(x1, y1, z0) * (1.0 - fz) + g(x1, y1, z1) * fz;
    let c0 = c00 * (1.0 - fy) + c01 * fy;
    let c1 = c10 * (1.0 - fy) + c11 * fy;
    c0 * (1.0 - fx) + c1 * fx
}

/// Copy the box starting at `start` (may be negative = zero padding) of size `size` out of `v`;
/// the affine's origin moves to the box's first voxel.
fn extract_box(v: &Volume, start: [i64; 3], size: [usize; 3]) -> Volume {
    let mut data = vec![0f32; size[0] * size[1] * size[2]];
    let [nx, ny, nz] = v.dims.map(|d| d as i64);
    for a in 0..size[0] {
        let x = start[0] + a as i64;
        if x < 0 || x >= nx {
            continue;
        }
        for b in 0..size[1] {
            let y = start[1] + b as i64;
            if y < 0 || y >= ny {
                continue;
            }
            let z_lo = (-start[2]).max(0) as usize;
            let z_hi = ((nz - start[2]).min(size[2] as i64)).max(0) as usize;
            if z_lo >= z_hi {
                continue;
            }
            let src = v.index(x as usize, y as usize, (start[2] + z_lo as i64) as usize);
            let dst = (a * size[1] + b) * size[2];
            data[dst + z_lo..dst + z_hi].copy_from_slice(&v.data[src..src + (z_hi - z_lo)]);
        }
    }
    let mut aff = v.affine;
    let shift = affine::apply(&v.affine, start.map(|s| s as f64));
    for r in 0..3 {
        aff[r][3] = shift[r];
    }
    Volume {
        dims: size,
        data,
        affine: aff,
    }
}

/// The shape `center_crop` gives a volume of shape `dims`.
pub fn center_crop_shape(dims: [usize; 3], roi: [usize; 3], pad: bool) -> [usize; 3] {
    [0, 1, 2].map(|a| if dims[a] >= roi[a] || pad { roi[a] } else { dims[a] })
}

/// MONAI `CenterSpatialCrop(roi)`: start = d/2 - roi/2 (floors), axes shorter than roi are kept
/// whole. With `pad`, shorter axes are then zero-padded symmetrically to roi (`ResizeWithPadOrCrop`,
/// padding before cropping: before = (roi - d) / 2) so the output shape is always `roi`.
pub fn center_crop(v: &Volume, roi: [usize; 3], pad: bool) -> Volume {
    let mut start = [0i64; 3];
    let mut size = [0usize; 3];
    for a in 0..3 {
        let d = v.dims[a];
        if d >= roi[a] {
            start[a] = (d / 2) as i64 - (roi[a] / 2) as i64;
            size[a] = roi[a];
        } else if pad {
            start[a] = -(((roi[a] - d) / 2) as i64);
            size[a] = roi[a];
        } else {
            start[a] = 0;
            size[a] = d;
        }
    }
    extract_box(v, start, size)
}

/// MONAI `RandSpatialCrop(roi, random_size=False)`: a uniformly placed roi-sized box (axes
/// shorter than roi are kept whole), drawn from `rng`.
pub fn random_crop(v: &Volume, roi: [usize; 3], rng: &mut SplitMix64) -> Volume {
    let mut start = [0i64; 3];
    let mut size = [0usize; 3];
    for a in 0..3 {
        size[a] = roi[a].min(v.dims[a]);
        let slack = v.dims[a] - size[a];
        start[a] = rng.below(slack as u64 + 1) as i64;
    }
    extract_box(v, start, size)
}

/// Settings of `ScaleIntensityRangePercentiles` (the bundle: 0, 99.5 -> 0, 1, no clipping).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PercentileScaling {
    pub lower: f64,
    pub upper: f64,
    pub b_min: f64,
    pub b_max: f64,
    pub clip: bool,
}

impl Default for PercentileScaling {
    fn default() -> Self {
        PercentileScaling {
            lower: 0.0,
            upper: 99.5,
            b_min: 0.0,
            b_max: 1.0,
            clip: false,
        }
    }
}

/// MONAI `ScaleIntensityRangePercentiles`: a_min/a_max = linear percentiles of all voxels,
/// then (x - a_min) / (a_max - a_min) * (b_max - b_min) + b_min; a flat image is only shifted.
/// Returns (a_min, a_max).
pub fn scale_percentiles(v: &mut Volume, s: &PercentileScaling) -> Result<(f64, f64), String> {
    let p = percentiles(&v.data, &[s.lower, s.upper]).ok_or("empty volume or percentile outside [0, 100]")?;
    let (a_min, a_max) = (p[0], p[1]);
    if a_max - a_min == 0.0 {
        for x in v.data.iter_mut() {
            *x = (*x as f64 - a_min + s.b_min) as f32;
        }
    } else {
        let (lo, hi) = (s.b_min.min(s.b_max), s.b_max.max(s.b_min));
        for x in v.data.iter_mut() {
            let mut y = (*x as f64 - a_min) / (a_max - a_min) * (s.b_max - s.b_min) + s.b_min;
            if s.clip {
                y = y.clamp(lo, hi);
            }
            *x = y as f32;
        }
    }
    Ok((a_min, a_max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(dims: [usize; 3], affine: Affine) -> Volume {
        let data = (0..dims[0] * dims[1] * dims[2]).map(|i| i as f32).collect();
        Volume::new(dims, data, affine).unwrap()
    }

    #[test]
    fn orientation_flips_las_and_keeps_world_positions() {
        let a: Affine = [
            [-2.0, 0.0, 0.0, 10.0],
            [0.0, 2.0, 0.0, -4.0],
            [0.0, 0.0, 2.0, 1.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let v = ramp([3, 4, 5], a);
        let o = orient_ras(&v).unwrap();
        assert_eq!(o.dims, [3, 4, 5]);
        assert_eq!(o.affine[0][0], 2.0);
        assert_eq!(o.affine[0][3], 10.0 - 4.0);
        for x in 0..3 {
            // same world point, same value
            assert_eq!(o.at(x, 1, 2), v.at(2 - x, 1, 2));
        }
    }

    #[test]
    fn orientation_permutes_axes() {
        // voxel axis 0 -> S, 1 -> R, 2 -> A
        let a: Affine = [
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let v = ramp([2, 3, 4], a);
        let o = orient_ras(&v).unwrap();
        assert_eq!(o.dims, [3, 4, 2]);
        assert_eq!(o.at(1, 2, 1), v.at(1, 1, 2));
        let w = affine::apply(&o.affine, [1.0, 2.0, 1.0]);
        assert_eq!(w, affine::apply(&v.affine, [1.0, 1.0, 2.0]));
    }

    #[test]
    fn spacing_grid_rounds_like_numpy_and_keeps_origin() {
        let a: Affine = [
            [2.0, 0.0, 0.0, -30.0],
            [0.0, 2.0, 0.0, 5.0],
            [0.0, 0.0, 2.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let (shape, aff) = spacing_grid([33, 41, 25], &a, [1.1; 3]).unwrap();
        assert_eq!(shape, [59, 74, 45]);
        assert_eq!(aff[0][3], -30.0);
        assert!((aff[1][1] - 1.1).abs() < 1e-12);
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(3.5), 4.0);
    }

    #[test]
    fn resampling_a_linear_ramp_is_exact_inside() {
        let a: Affine = [
            [2.0, 0.0, 0.0, 0.0],
            [0.0, 2.0, 0.0, 0.0],
            [0.0, 0.0, 2.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let mut v = ramp([5, 6, 7], a);
        for x in 0..5 {
            for y in 0..6 {
                for z in 0..7 {
                    let i = v.index(x, y, z);
                    v.data[i] = (3 * x + 2 * y + z) as f32;
                }
            }
        }
        let r = resample_to_spacing(&v, [1.0; 3]).unwrap();
        assert_eq!(r.dims, [9, 11, 13]);
        // output voxel (i,j,k) sits at input (i/2, j/2, k/2)
        assert!((r.at(3, 5, 7) - (1.5 * 3.0 + 2.5 * 2.0 + 3.5)).abs() < 1e-5);
        // identity grid is a no-op
        let same = resample_to_spacing(&v, [2.0; 3]).unwrap();
        assert_eq!(same.data, v.data);
    }

    #[test]
    fn oblique_resampling_is_exact_for_a_linear_world_field() {
        // 30 degrees about z, anisotropic 2 x 1.5 x 2.5 mm, arbitrary origin
        let (c, s) = (30f64.to_radians().cos(), 30f64.to_radians().sin());
        let a: Affine = [
            [2.0 * c, -1.5 * s, 0.0, 4.0],
            [2.0 * s, 1.5 * c, 0.0, -7.0],
            [0.0, 0.0, 2.5, 3.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let field = |w: [f64; 3]| 0.3 * w[0] - 0.2 * w[1] + 0.1 * w[2] + 5.0;
        let dims = [12, 14, 10];
        let mut v = ramp(dims, a);
        for x in 0..dims[0] {
            for y in 0..dims[1] {
                for z in 0..dims[2] {
                    let i = v.index(x, y, z);
                    v.data[i] = field(affine::apply(&a, [x as f64, y as f64, z as f64])) as f32;
                }
            }
        }
        let r = resample_to_spacing(&v, [1.1; 3]).unwrap();
        // rotation kept, zooms replaced
        let sp = r.spacing();
        assert!(sp.iter().all(|s| (s - 1.1).abs() < 1e-9), "{sp:?}");
        assert!((r.affine[1][0] / r.affine[0][0] - s / c).abs() < 1e-9);
        // origin on the first input voxel centre (the minimal corner here)
        assert!((r.affine[0][3] - 4.0).abs() < 1e-9 && (r.affine[1][3] + 7.0).abs() < 1e-9);
        // every output voxel inside the input's extent carries the field at its world position
        let inv = affine::inverse(&a).unwrap();
        let mut checked = 0;
        for i in 0..r.dims[0] {
            for j in 0..r.dims[1] {
                for k in 0..r.dims[2] {
                    let w = affine::apply(&r.affine, [i as f64, j as f64, k as f64]);
                    let p = affine::apply(&inv, w);
                    if (0..3).all(|d| p[d] >= 0.0 && p[d] <= (dims[d] - 1) as f64) {
                        assert!((r.at(i, j, k) as f64 - field(w)).abs() < 1e-4, "at {i},{j},{k}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 1000, "{checked}");
    }

    #[test]
    fn center_crop_and_pad() {
        let v = ramp([10, 4, 5], super::affine::identity());
        let c = center_crop(&v, [4, 6, 5], true);
        assert_eq!(c.dims, [4, 6, 5]);
        // x: start 10/2 - 2 = 3; y: padded 1 before
        assert_eq!(c.at(0, 1, 0), v.at(3, 0, 0));
        assert_eq!(c.at(0, 0, 0), 0.0);
        assert_eq!(c.affine[0][3], 3.0);
        assert_eq!(c.affine[1][3], -1.0);
        let n = center_crop(&v, [4, 6, 5], false);
        assert_eq!(n.dims, [4, 4, 5]);
    }

    #[test]
    fn random_crop_is_seeded_and_in_bounds() {
        let v = ramp([10, 12, 9], super::affine::identity());
        let a = random_crop(&v, [4, 5, 6], &mut SplitMix64::new(3));
        let b = random_crop(&v, [4, 5, 6], &mut SplitMix64::new(3));
        assert_eq!(a, b);
        assert_eq!(a.dims, [4, 5, 6]);
        let o = a.affine;
        let (x, y, z) = (o[0][3] as usize, o[1][3] as usize, o[2][3] as usize);
        assert_eq!(a.at(1, 2, 3), v.at(x + 1, y + 2, z + 3));
    }

    #[test]
    fn percentile_scaling() {
        let mut v = ramp([1, 1, 201], super::affine::identity());
        let (lo, hi) = scale_percentiles(&mut v, &PercentileScaling::default()).unwrap();
        assert_eq!(lo, 0.0);
        assert!((hi - 199.0).abs() < 1e-9);
        assert!((v.data[200] as f64 - 200.0 / 199.0).abs() < 1e-6);
        let mut flat = Volume::new([1, 1, 3], vec![2.0; 3], super::affine::identity()).unwrap();
        scale_percentiles(&mut flat, &PercentileScaling::default()).unwrap();
        assert_eq!(flat.data, vec![0.0; 3]);
    }
}
