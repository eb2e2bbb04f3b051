//! NIfTI-1 reading and writing. Headers are parsed by the `nifti` crate; the voxel data is decoded
//! here so that one channel of a 4-D file can be read without converting the others, every length
//! is checked against the file before anything is allocated, and the affine follows nibabel
//! (sform if sform_code > 0, else qform if qform_code > 0, else the pixdim-only fallback).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use nifti::{Endianness, NiftiHeader, NiftiType};

use super::affine::{identity, inverse, Affine};
use super::error::{DataError, Result};
use super::volume::Volume;

/// Deflate cannot compress better than about 1032:1; a header claiming more data than that is lying.
const MAX_GZIP_RATIO: u64 = 1100;
/// Largest single channel accepted (2^31 voxels, 8 GiB as float32): far beyond any MRI volume.
const MAX_VOXELS: u64 = 1 << 31;

/// What a NIfTI header says, validated.
#[derive(Debug, Clone)]
pub struct NiftiInfo {
    /// Spatial dimensions (x, y, z).
    pub dims: [usize; 3],
    /// Number of channels: dim[4] for 4-D files, 1 for 3-D files.
    pub channels: usize,
    pub datatype: NiftiType,
    pub endianness: Endianness,
    /// Voxel-to-world affine chosen as nibabel does.
    pub affine: Affine,
    /// Which header field produced the affine: "sform", "qform" or "pixdim".
    pub affine_source: &'static str,
    pub scl_slope: f32,
    pub scl_inter: f32,
    vox_offset: u64,
}

fn bad(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::BadNifti {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn bytes_per_voxel(t: NiftiType) -> Option<usize> {
    Some(match t {
        NiftiType::Uint8 | NiftiType::Int8 => 1,
        NiftiType::Int16 | NiftiType::Uint16 => 2,
        NiftiType::Int32 | NiftiType::Uint32 | NiftiType::Float32 => 4,
        NiftiType::Int64 | NiftiType::Uint64 | NiftiType::Float64 => 8,
        _ => return None,
    })
}

/// An open NIfTI byte stream (gzip detected from the content, not the name) and the file size.
fn open_stream(path: &Path) -> Result<(Box<dyn Read>, u64, bool)> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    let mut reader = BufReader::new(file);
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        match reader.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DataError::io(path, e)),
        }
    }
    let head = std::io::Cursor::new(magic[..got].to_vec());
    let chained = head.chain(reader);
    if got == 2 && magic == [0x1f, 0x8b] {
        Ok((Box::new(flate2::read::MultiGzDecoder::new(chained)), len, true))
    } else {
        Ok((Box::new(chained), len, false))
    }
}

fn read_exact_or(path: &Path, r: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => bad(
            path,
            format!("file ends inside the {what} (truncated file or gzip stream)"),
        ),
        _ => bad(path, format!("cannot read the {what}: {e}")),
    })
}

fn skip(path: &Path, r: &mut dyn Read, n: u64, what: &str) -> Result<()> {
    let copied = std::io::copy(&mut r.take(n), &mut std::io::sink())
        .map_err(|e| bad(path, format!("cannot read the {what}: {e}")))?;
    if copied != n {
        return Err(bad(
            path,
            format!("file ends inside the {what} (truncated file or gzip stream)"),
        ));
    }
    Ok(())
}

/// Parse and validate the 348-byte header from the start of `r`.
fn parse_header(path: &Path, r: &mut dyn Read) -> Result<NiftiHeader> {
    let mut hdr = [0u8; 348];
    read_exact_or(path, r, &mut hdr[..4], "header")?;
    let le = i32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let be = i32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    if le == 540 || be == 540 {
        return Err(DataError::Nifti2 {
            path: path.to_path_buf(),
        });
    }
    if le != 348 && be != 348 {
        return Err(bad(
            path,
            format!("sizeof_hdr is {le} (expected 348): not a NIfTI-1 file"),
        ));
    }
    read_exact_or(path, r, &mut hdr[4..], "header")?;
    let mut header = NiftiHeader::from_reader(&hdr[..]).map_err(|e| bad(path, format!("invalid header: {e}")))?;
    if &header.magic == b"ni1\0" {
        return Err(bad(
            path,
            "a .hdr/.img pair header (magic ni1); convert to a single .nii file",
        ));
    }
    // nibabel's fix for qfac (pixdim[0]) values other than -1/1
    header.fix();
    Ok(header)
}

fn validate(path: &Path, header: &NiftiHeader) -> Result<NiftiInfo> {
    let shape_err = |reason: String| DataError::BadShape {
        path: path.to_path_buf(),
        reason,
    };
    let ndim = header.dim[0] as usize;
    if !(1..=7).contains(&ndim) {
        return Err(shape_err(format!(
            "dim[0] = {ndim} is not a valid number of dimensions"
        )));
    }
    let dim: Vec<usize> = header.dim[1..=ndim].iter().map(|&d| d as usize).collect();
    if let Some(i) = dim.iter().position(|&d| d == 0) {
        return Err(shape_err(format!("dimension {} has size 0 (dims {:?})", i + 1, dim)));
    }
    if ndim < 3 {
        return Err(shape_err(format!(
            "{ndim}-D image (dims {dim:?}); a 3-D volume is needed"
        )));
    }
    if ndim > 4 {
        return Err(shape_err(format!(
            "{ndim}-D image (dims {dim:?}); only 3-D volumes or 4-D multi-channel volumes are supported"
        )));
    }
    let channels = if ndim == 4 { dim[3] } else { 1 };
    let code = header.datatype;
    let datatype = header.data_type().map_err(|_| DataError::UnsupportedDatatype {
        path: path.to_path_buf(),
        datatype: code,
        name: "unknown code".into(),
    })?;
    if bytes_per_voxel(datatype).is_none() {
        return Err(DataError::UnsupportedDatatype {
            path: path.to_path_buf(),
            datatype: code,
            name: format!("{datatype:?}"),
        });
    }
    let vox_offset = header.vox_offset;
    if !(vox_offset.is_finite() && vox_offset >= 352.0 && vox_offset.fract() == 0.0) {
        return Err(bad(
            path,
            format!("vox_offset {vox_offset} is not a whole number >= 352"),
        ));
    }
    let (affine, affine_source) = best_affine(path, header)?;
    Ok(NiftiInfo {
        dims: [dim[0], dim[1], dim[2]],
        channels,
        datatype,
        endianness: header.endianness,
        affine,
        affine_source,
        scl_slope: header.scl_slope,
        scl_inter: header.scl_inter,
        vox_offset: vox_offset as u64,
    })
}

/// nibabel's `get_best_affine`.
fn best_affine(path: &Path, h: &NiftiHeader) -> Result<(Affine, &'static str)> {
    let aff_err = |reason: String| DataError::BadAffine {
        path: path.to_path_buf(),
        reason,
    };
    let (a, source) = if h.sform_code > 0 {
        let mut a = identity();
        for (i, row) in [h.srow_x, h.srow_y, h.srow_z].iter().enumerate() {
            for j in 0..4 {
                a[i][j] = row[j] as f64;
            }
        }
        (a, "sform")
    } else if h.qform_code > 0 {
        (qform_affine(h).map_err(aff_err)?, "qform")
    } else {
        // Analyze-style fallback: x flipped, origin at the volume centre.
        let mut a = identity();
        let mut z = [h.pixdim[1] as f64, h.pixdim[2] as f64, h.pixdim[3] as f64];
        z[0] = -z[0];
        for i in 0..3 {
            a[i][i] = z[i];
            let origin = (h.dim[i + 1] as f64 - 1.0) / 2.0;
            a[i][3] = -origin * z[i];
        }
        (a, "pixdim")
    };
    if a.iter().flatten().any(|v| !v.is_finite()) {
        return Err(aff_err(format!("{source} affine has non-finite entries")));
    }
    if inverse(&a).is_none() {
        return Err(aff_err(format!(
            "{source} affine is singular (a zero voxel size?): {a:?}"
        )));
    }
    Ok((a, source))
}

/// nibabel's `get_qform`: quaternion (b, c, d) with a = sqrt(1 - b^2 - c^2 - d^2), qfac on z.
fn qform_affine(h: &NiftiHeader) -> std::result::Result<Affine, String> {
    let (b, c, d) = (h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64);
    let w2 = 1.0 - (b * b + c * c + d * d);
    let threshold = -(f32::EPSILON as f64) * 3.0;
    let w = if w2 < 0.0 {
        if w2 < threshold {
            return Err(format!("qform quaternion ({b}, {c}, {d}) has norm > 1"));
        }
        0.0
    } else {
        w2.sqrt()
    };
    let nq = w * w + b * b + c * c + d * d;
    let r = if nq < f64::EPSILON {
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    } else {
        let s = 2.0 / nq;
        let (x, y, z) = (b, c, d);
        let (xs, ys, zs) = (x * s, y * s, z * s);
        let (wx, wy, wz) = (w * xs, w * ys, w * zs);
        let (xx, xy, xz) = (x * xs, x * ys, x * zs);
        let (yy, yz, zz) = (y * ys, y * zs, z * zs);
        [
            [1.0 - (yy + zz), xy - wz, xz + wy],
            [xy + wz, 1.0 - (xx + zz), yz - wx],
            [xz - wy, yz + wx, 1.0 - (xx + yy)],
        ]
    };
    let mut vox = [h.pixdim[1] as f64, h.pixdim[2] as f64, h.pixdim[3] as f64];
    if vox.iter().any(|&v| v < 0.0) {
        return Err("pixdim[1..4] must be positive for a qform".into());
    }
    let qfac = if h.pixdim[0] == -1.0 { -1.0 } else { 1.0 };
    vox[2] *= qfac;
    let mut a = identity();
    for i in 0..3 {
        for j in 0..3 {
            a[i][j] = r[i][j] * vox[j];
        }
    }
    a[0][3] = h.quatern_x as f64;
    a[1][3] = h.quatern_y as f64;
    a[2][3] = h.quatern_z as f64;
    Ok(a)
}

/// Read and validate only the header of a NIfTI-1 file (.nii or .nii.gz).
pub fn read_info(path: &Path) -> Result<NiftiInfo> {
    let (mut r, _, _) = open_stream(path)?;
    let header = parse_header(path, &mut r)?;
    validate(path, &header)
}

/// nibabel's slope/intercept rule: a zero or non-finite slope means "no scaling".
fn scaling(path: &Path, info: &NiftiInfo) -> Result<Option<(f64, f64)>> {
    let slope = info.scl_slope as f64;
    let inter = info.scl_inter as f64;
    if slope == 0.0 || !slope.is_finite() {
        return Ok(None);
    }
    if !inter.is_finite() {
        return Err(bad(path, "valid scl_slope but non-finite scl_inter"));
    }
    if slope == 1.0 && inter == 0.0 {
        return Ok(None);
    }
    Ok(Some((slope, inter)))
}

fn decode(raw: &[u8], t: NiftiType, e: Endianness, out: &mut Vec<f64>) {
    let big = e == Endianness::Big;
    macro_rules! go {
        ($ty:ty, $n:expr) => {
            out.extend(raw.chunks_exact($n).map(|c| {
                let mut b = [0u8; $n];
                b.copy_from_slice(c);
                (if big {
                    <$ty>::from_be_bytes(b)
                } else {
                    <$ty>::from_le_bytes(b)
                }) as f64
            }))
        };
    }
    match t {
        NiftiType::Uint8 => out.extend(raw.iter().map(|&v| v as f64)),
        NiftiType::Int8 => out.extend(raw.iter().map(|&v| v as i8 as f64)),
        NiftiType::Int16 => go!(i16, 2),
        NiftiType::Uint16 => go!(u16, 2),
        NiftiType::Int32 => go!(i32, 4),
        NiftiType::Uint32 => go!(u32, 4),
        NiftiType::Float32 => go!(f32, 4),
        NiftiType::Int64 => go!(i64, 8),
        NiftiType::Uint64 => go!(u64, 8),
        NiftiType::Float64 => go!(f64, 8),
        // validate() admits only the types above
        _ => {}
    }
}

/// Read one 3-D volume from a NIfTI-1 file (.nii or .nii.gz, either endianness, any supported
/// datatype, scl_slope/scl_inter applied). `channel` picks a channel of a 4-D file (Task01:
/// 0 = FLAIR); `None` requires a single-channel file. NaN/infinite voxels are an error.
pub fn read_volume(path: &Path, channel: Option<usize>) -> Result<Volume> {
    let (mut r, file_len, gz) = open_stream(path)?;
    let header = parse_header(path, &mut r)?;
    let info = validate(path, &header)?;
    let ch = match channel {
        Some(c) if c < info.channels => c,
        None if info.channels == 1 => 0,
        Some(c) => {
            return Err(DataError::BadChannel {
                path: path.to_path_buf(),
                channel: c,
                channels: info.channels,
            })
        }
        None => {
            return Err(DataError::BadShape {
                path: path.to_path_buf(),
                reason: format!(
                    "4-D volume with {} channels; choose one (e.g. --channel 0 for FLAIR)",
                    info.channels
                ),
            })
        }
    };
    let bpv = bytes_per_voxel(info.datatype).unwrap_or(1) as u64;
    let nvox = (info.dims[0] as u64) * (info.dims[1] as u64) * (info.dims[2] as u64);
    if nvox > MAX_VOXELS {
        return Err(bad(
            path,
            format!("{nvox} voxels per channel exceeds the limit of {MAX_VOXELS}"),
        ));
    }
    let chan_bytes = nvox
        .checked_mul(bpv)
        .ok_or_else(|| bad(path, "volume size overflows"))?;
    let total = chan_bytes
        .checked_mul(info.channels as u64)
        .and_then(|d| d.checked_add(info.vox_offset))
        .ok_or_else(|| bad(path, "volume size overflows"))?;
    if !gz && total > file_len {
        return Err(bad(
            path,
            format!("truncated: the header needs {total} bytes but the file has {file_len}"),
        ));
    }
    if gz && total > file_len.saturating_mul(MAX_GZIP_RATIO).saturating_add(1 << 20) {
        return Err(bad(
            path,
            format!("the header claims {total} bytes of data, impossible for a {file_len}-byte gzip file"),
        ));
    }
    let chan_len = usize::try_from(chan_bytes).map_err(|_| bad(path, "volume too large for this machine"))?;
    skip(path, &mut r, info.vox_offset - 348, "header extensions")?;
    skip(path, &mut r, chan_bytes * ch as u64, "voxel data")?;
    let mut raw = vec![0u8; chan_len];
    read_exact_or(path, &mut r, &mut raw, "voxel data")?;
    // Drain the rest so a damaged gzip stream (bad CRC, cut tail) is noticed.
    let rest = chan_bytes * (info.channels - 1 - ch) as u64;
    skip(path, &mut r, rest, "voxel data")?;
    if gz {
        std::io::copy(&mut r, &mut std::io::sink()).map_err(|e| bad(path, format!("damaged gzip stream: {e}")))?;
    }
    let mut values = Vec::with_capacity(nvox as usize);
    decode(&raw, info.datatype, info.endianness, &mut values);
    drop(raw);
    if let Some((slope, inter)) = scaling(path, &info)? {
        for v in values.iter_mut() {
            *v = *v * slope + inter;
        }
    }
    // Fortran order (x fastest) -> C order (z fastest)
    let [nx, ny, nz] = info.dims;
    let mut data = vec![0f32; values.len()];
    let mut bad_count = 0usize;
    let mut first = [0usize; 3];
    for z in 0..nz {
        for y in 0..ny {
            let src = &values[(z * ny + y) * nx..(z * ny + y + 1) * nx];
            for (x, &v) in src.iter().enumerate() {
                if !v.is_finite() {
                    if bad_count == 0 {
                        first = [x, y, z];
                    }
                    bad_count += 1;
                }
                data[(x * ny + y) * nz + z] = v as f32;
            }
        }
    }
    if bad_count > 0 {
        return Err(DataError::NonFinite {
            path: path.to_path_buf(),
            count: bad_count,
            first,
        });
    }
    Ok(Volume {
        dims: info.dims,
        data,
        affine: info.affine,
    })
}

/// Quaternion (b, c, d), qfac and voxel sizes describing the rotation part of `a`, for the qform.
fn affine_to_quaternion(a: &Affine) -> ([f64; 3], f64, [f64; 3]) {
    let zooms = super::affine::spacing(a);
    let mut r = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            r[i][j] = if zooms[j] > 0.0 {
                a[i][j] / zooms[j]
            } else if i == j {
                1.0
            } else {
                0.0
            };
        }
    }
    let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1]) - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    let qfac = if det < 0.0 { -1.0 } else { 1.0 };
    if qfac < 0.0 {
        for row in r.iter_mut() {
            row[2] = -row[2];
        }
    }
    let trace = r[0][0] + r[1][1] + r[2][2];
    let (w, x, y, z) = if trace > 0.0 {
        let s = (trace + 1.0).sqrt() * 2.0;
        (
            0.25 * s,
            (r[2][1] - r[1][2]) / s,
            (r[0][2] - r[2][0]) / s,
            (r[1][0] - r[0][1]) / s,
        )
    } else if r[0][0] > r[1][1] && r[0][0] > r[2][2] {
        let s = (1.0 + r[0][0] - r[1][1] - r[2][2]).max(0.0).sqrt() * 2.0;
        (
            (r[2][1] - r[1][2]) / s,
            0.25 * s,
            (r[0][1] + r[1][0]) / s,
            (r[0][2] + r[2][0]) / s,
        )
    } else if r[1][1] > r[2][2] {
        let s = (1.0 + r[1][1] - r[0][0] - r[2][2]).max(0.0).sqrt() * 2.0;
        (
            (r[0][2] - r[2][0]) / s,
            (r[0][1] + r[1][0]) / s,
            0.25 * s,
            (r[1][2] + r[2][1]) / s,
        )
    } else {
        let s = (1.0 + r[2][2] - r[0][0] - r[1][1]).max(0.0).sqrt() * 2.0;
        (
            (r[1][0] - r[0][1]) / s,
            (r[0][2] + r[2][0]) / s,
            (r[1][2] + r[2][1]) / s,
            0.25 * s,
        )
    };
    // NIfTI stores a >= 0
    let sign = if w < 0.0 { -1.0 } else { 1.0 };
    ([x * sign, y * sign, z * sign], qfac, zooms)
}

/// A NIfTI-1 header carrying `affine` as both sform and qform (code 1, scanner), millimetres.
pub fn header_for(affine: &Affine, description: &str) -> NiftiHeader {
    let mut h = NiftiHeader::default();
    let (q, qfac, zooms) = affine_to_quaternion(affine);
    h.pixdim = [
        qfac as f32,
        zooms[0] as f32,
        zooms[1] as f32,
        zooms[2] as f32,
        1.0,
        1.0,
        1.0,
        1.0,
    ];
    h.quatern_b = q[0] as f32;
    h.quatern_c = q[1] as f32;
    h.quatern_d = q[2] as f32;
    h.quatern_x = affine[0][3] as f32;
    h.quatern_y = affine[1][3] as f32;
    h.quatern_z = affine[2][3] as f32;
    h.qform_code = 1;
    h.sform_code = 1;
    let row = |i: usize| {
        [
            affine[i][0] as f32,
            affine[i][1] as f32,
            affine[i][2] as f32,
            affine[i][3] as f32,
        ]
    };
    h.srow_x = row(0);
    h.srow_y = row(1);
    h.srow_z = row(2);
    h.xyzt_units = 2; // millimetres
    let mut d = description.as_bytes().to_vec();
    d.truncate(79);
    d.resize(80, 0);
    h.descrip = d;
    h
}

/// A private temporary folder beside `path` and the file inside it to write first. The nifti
/// writer rewrites file extensions, so the temporary file gets a plain `volume.nii[.gz]` name.
fn temp_target(path: &Path) -> Result<(PathBuf, PathBuf, bool)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| DataError::InvalidSetting(format!("{}: output needs a UTF-8 file name", path.display())))?;
    let gz = name.ends_with(".nii.gz");
    if !gz && !name.ends_with(".nii") {
        return Err(DataError::InvalidSetting(format!(
            "{}: output name must end in .nii or .nii.gz",
            path.display()
        )));
    }
    let dir = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let file = dir.join(if gz { "volume.nii.gz" } else { "volume.nii" });
    Ok((dir, file, gz))
}

/// Write an n-D array (shape x, y, z[, c], C order) as NIfTI-1 with `affine`; gzip when the name
/// ends in .nii.gz. Written to a temporary file in the same folder, then renamed into place.
pub fn write_array<A, S, D>(
    path: &Path,
    array: &ndarray::ArrayBase<S, D>,
    affine: &Affine,
    description: &str,
) -> Result<()>
where
    S: ndarray::Data<Elem = A>,
    A: nifti::DataElement + bytemuck::Pod,
    D: ndarray::Dimension + ndarray::RemoveAxis,
{
    let (dir, tmp, gz) = temp_target(path)?;
    std::fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
    let header = header_for(affine, description);
    let result = nifti::writer::WriterOptions::new(&tmp)
        .reference_header(&header)
        .compress(gz)
        .write_nifti(array)
        .map_err(|e| match e {
            nifti::NiftiError::Io(io) => DataError::io(path, io),
            other => bad(path, format!("cannot write: {other}")),
        })
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| DataError::io(path, e)));
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&dir);
    result
}

/// Write a volume as float32 NIfTI-1 with its affine (atomically: temp file + rename).
pub fn write_volume(path: &Path, volume: &Volume, description: &str) -> Result<()> {
    let array = ndarray::ArrayView3::from_shape(volume.dims, &volume.data)
        .map_err(|e| bad(path, format!("volume shape does not match its data: {e}")))?;
    write_array(path, &array, &volume.affine, description)
}
