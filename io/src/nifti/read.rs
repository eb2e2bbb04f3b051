//! The NIfTI-1 reader (.nii and .nii.gz, either endianness, 3-D or 4-D, the integer and float
//! datatypes): headers are parsed by the `nifti` crate; the voxel data is decoded here, one
//! channel at a time, streaming into the one output buffer. Every size is checked before any
//! allocation: against a fixed voxel limit, against the file's real length (a gzip file cannot
//! inflate by more than `gzip::MAX_RATIO`), and against the caller's `Budget`. A gzip stream is
//! read up to what the header declares plus `TRAILING_SLACK` (so a bomb is never inflated) and
//! to its end within that, so a damaged CRC or cut tail is noticed. The affine follows nibabel
//! (sform if sform_code > 0, else qform if qform_code > 0, else the pixdim-only fallback).

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use nifti::{Endianness, NiftiHeader, NiftiType};

use crate::affine::{identity, inverse, Affine};
use crate::budget::{Budget, BudgetError};
use crate::input::{read_full, Input};

/// Largest single channel accepted (2^31 voxels, 8 GiB as float32): far beyond any MRI volume.
const MAX_VOXELS: u64 = 1 << 31;
/// Bytes a gzip stream may hold after the data its header declares (padding some writers add);
/// beyond this it is refused rather than inflated.
pub const TRAILING_SLACK: u64 = 1 << 20;
/// Size of the decoding step.
const CHUNK: usize = 1 << 16;

/// Every way reading a NIfTI file can fail; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum NiftiError {
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: not a readable NIfTI-1 file: {reason}")]
    BadNifti { path: PathBuf, reason: String },
    #[error("{path}: NIfTI-2 files are not supported (convert to NIfTI-1, e.g. with nibabel or fslchfiletype)")]
    Nifti2 { path: PathBuf },
    #[error("{path}: unsupported NIfTI datatype {datatype} ({name}); supported: uint8, int8, int16, uint16, int32, uint32, int64, uint64, float32, float64")]
    UnsupportedDatatype {
        path: PathBuf,
        datatype: i16,
        name: String,
    },
    #[error("{path}: {reason}")]
    BadShape { path: PathBuf, reason: String },
    #[error("{path}: channel {channel} requested but the volume has {channels} channel(s)")]
    BadChannel {
        path: PathBuf,
        channel: usize,
        channels: usize,
    },
    #[error("{path}: {count} voxel(s) are NaN or infinite as float32, after scl_slope/scl_inter (first at voxel {first:?})")]
    NonFinite {
        path: PathBuf,
        count: usize,
        first: [usize; 3],
    },
    #[error("{path}: the voxel-to-world affine is not usable: {reason}")]
    BadAffine { path: PathBuf, reason: String },
    #[error("{path}: {cause}")]
    TooLarge { path: PathBuf, cause: BudgetError },
}

type Result<T> = std::result::Result<T, NiftiError>;

/// One channel read from a NIfTI file: C order (x slowest, z fastest), world = affine * [x, y, z, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub dims: [usize; 3],
    pub data: Vec<f32>,
    pub affine: Affine,
}

/// What a NIfTI header says, validated.
#[derive(Debug, Clone)]
pub struct NiftiInfo {
    /// Spatial dimensions (x, y, z).
    pub dims: [usize; 3],
    /// Number of channels: `dim[4]` for 4-D files, 1 for 3-D files.
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

impl NiftiInfo {
    /// Voxels of one channel.
    pub fn voxels(&self) -> u64 {
        self.dims.iter().map(|&d| d as u64).product()
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> NiftiError {
    NiftiError::BadNifti {
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

/// An open NIfTI byte stream (gzip detected from the content, not the name) and the file size
/// (`None` for a device).
fn open_stream(path: &Path) -> Result<(Box<dyn Read>, Option<u64>, bool)> {
    let input = Input::open(path).map_err(|e| NiftiError::Io {
        path: path.to_path_buf(),
        cause: e,
    })?;
    let len = input.len;
    let mut reader = BufReader::with_capacity(CHUNK, input.file);
    let mut magic = [0u8; 2];
    let got = read_full(&mut reader, &mut magic).map_err(|e| NiftiError::Io {
        path: path.to_path_buf(),
        cause: e,
    })?;
    let head = std::io::Cursor::new(magic[..got].to_vec());
    let chained = head.chain(reader);
    if got == 2 && magic == crate::gzip::MAGIC {
        Ok((Box::new(crate::gzip::decoder(chained)), len, true))
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
        return Err(NiftiError::Nifti2 {
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
    let mut header = NiftiHeader::from_reader(&hdr[..])
        .map_err(|e| bad(path, format!("invalid header: {e}")))?;
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
    let shape_err = |reason: String| NiftiError::BadShape {
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
        return Err(shape_err(format!(
            "dimension {} has size 0 (dims {:?})",
            i + 1,
            dim
        )));
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
    let datatype = header
        .data_type()
        .map_err(|_| NiftiError::UnsupportedDatatype {
            path: path.to_path_buf(),
            datatype: code,
            name: "unknown code".into(),
        })?;
    if bytes_per_voxel(datatype).is_none() {
        return Err(NiftiError::UnsupportedDatatype {
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
    let aff_err = |reason: String| NiftiError::BadAffine {
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

/// Decodes `raw` (whole voxels of type `t`) to f64 and hands each value to `put`.
fn decode(raw: &[u8], t: NiftiType, e: Endianness, mut put: impl FnMut(f64)) {
    let big = e == Endianness::Big;
    macro_rules! go {
        ($ty:ty, $n:expr) => {
            for c in raw.chunks_exact($n) {
                let mut b = [0u8; $n];
                b.copy_from_slice(c);
                put((if big {
                    <$ty>::from_be_bytes(b)
                } else {
                    <$ty>::from_le_bytes(b)
                }) as f64)
            }
        };
    }
    match t {
        NiftiType::Uint8 => raw.iter().for_each(|&v| put(v as f64)),
        NiftiType::Int8 => raw.iter().for_each(|&v| put(v as i8 as f64)),
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

/// Bytes of one channel and of the whole file the header describes, checked against the voxel
/// limit and against the file's real length (`file_len`, compressed when `gz`).
fn data_sizes(
    path: &Path,
    info: &NiftiInfo,
    file_len: Option<u64>,
    gz: bool,
) -> Result<(u64, u64)> {
    let bpv = bytes_per_voxel(info.datatype).unwrap_or(1) as u64;
    let nvox = info.voxels();
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
    if let Some(file_len) = file_len {
        if !gz && total > file_len {
            return Err(bad(
                path,
                format!("truncated: the header needs {total} bytes but the file has {file_len}"),
            ));
        }
        let most = file_len
            .saturating_mul(crate::gzip::MAX_RATIO)
            .saturating_add(1 << 20);
        if gz && total > most {
            return Err(bad(
                path,
                format!("the header claims {total} bytes of data, impossible for a {file_len}-byte gzip file"),
            ));
        }
    }
    Ok((chan_bytes, total))
}

/// `read_info` plus the size checks `read_volume` makes before allocating (voxel limit, the
/// file's real length, the gzip ratio): what a caller needs to plan memory from the header.
pub fn read_checked_info(path: &Path) -> Result<NiftiInfo> {
    let (mut r, file_len, gz) = open_stream(path)?;
    let header = parse_header(path, &mut r)?;
    let info = validate(path, &header)?;
    data_sizes(path, &info, file_len, gz)?;
    Ok(info)
}

/// Bytes `read_volume_within` allocates for one channel of `info`: the float32 output plus one
/// decoding step.
pub fn read_bytes_needed(info: &NiftiInfo) -> u128 {
    4 * info.voxels() as u128 + CHUNK as u128
}

/// `read_volume_within` with the default budget (half of physical memory).
pub fn read_volume(path: &Path, channel: Option<usize>) -> Result<Image> {
    read_volume_within(path, channel, Budget::default())
}

/// Read one 3-D volume from a NIfTI-1 file (.nii or .nii.gz, either endianness, any supported
/// datatype, scl_slope/scl_inter applied). `channel` picks a channel of a 4-D file (Task01:
/// 0 = FLAIR); `None` requires a single-channel file. NaN/infinite voxels are an error. The
/// output (4 bytes a voxel) must fit `budget`.
pub fn read_volume_within(path: &Path, channel: Option<usize>, budget: Budget) -> Result<Image> {
    let (mut r, file_len, gz) = open_stream(path)?;
    let header = parse_header(path, &mut r)?;
    let info = validate(path, &header)?;
    let ch = match channel {
        Some(c) if c < info.channels => c,
        None if info.channels == 1 => 0,
        Some(c) => {
            return Err(NiftiError::BadChannel {
                path: path.to_path_buf(),
                channel: c,
                channels: info.channels,
            })
        }
        None => {
            return Err(NiftiError::BadShape {
                path: path.to_path_buf(),
                reason: format!(
                    "4-D volume with {} channels; choose one (e.g. --channel 0 for FLAIR)",
                    info.channels
                ),
            })
        }
    };
    let (chan_bytes, total) = data_sizes(path, &info, file_len, gz)?;
    let bpv = bytes_per_voxel(info.datatype).unwrap_or(1) as u64;
    let nvox = info.voxels();
    if let Err(cause) = budget.check(read_bytes_needed(&info), "reading the voxel data") {
        return Err(NiftiError::TooLarge {
            path: path.to_path_buf(),
            cause,
        });
    }
    skip(path, &mut r, info.vox_offset - 348, "header extensions")?;
    skip(path, &mut r, chan_bytes * ch as u64, "voxel data")?;
    let scale = scaling(path, &info)?;
    // Stream the channel (x fastest) straight into C order (z fastest).
    let [nx, ny, nz] = info.dims;
    let mut data = vec![0f32; nvox as usize];
    let mut bad_count = 0usize;
    let mut first = [0usize; 3];
    let mut at = [0usize; 3];
    let step = (CHUNK as u64 / bpv * bpv) as usize;
    let mut raw = vec![0u8; step.min(chan_bytes as usize)];
    let mut left = chan_bytes;
    while left > 0 {
        let n = (step as u64).min(left) as usize;
        read_exact_or(path, &mut r, &mut raw[..n], "voxel data")?;
        decode(&raw[..n], info.datatype, info.endianness, |mut v| {
            if let Some((slope, inter)) = scale {
                v = v * slope + inter;
            }
            let [x, y, z] = at;
            // Checked as stored: a scaled value finite in f64 can overflow float32.
            let v = v as f32;
            if !v.is_finite() {
                if bad_count == 0 {
                    first = [x, y, z];
                }
                bad_count += 1;
            }
            data[(x * ny + y) * nz + z] = v;
            at[0] += 1;
            if at[0] == nx {
                at[0] = 0;
                at[1] += 1;
                if at[1] == ny {
                    at[1] = 0;
                    at[2] += 1;
                }
            }
        });
        left -= n as u64;
    }
    drop(raw);
    // Read the rest so a damaged gzip stream (bad CRC, cut tail) is noticed, but never more
    // than the header declares plus a little slack: a gzip bomb is not inflated.
    let rest = chan_bytes * (info.channels - 1 - ch) as u64;
    skip(path, &mut r, rest, "voxel data")?;
    if gz {
        let extra = std::io::copy(&mut (&mut r).take(TRAILING_SLACK + 1), &mut std::io::sink())
            .map_err(|e| bad(path, format!("damaged gzip stream: {e}")))?;
        if extra > TRAILING_SLACK {
            return Err(bad(
                path,
                format!(
                    "the gzip stream holds more than {TRAILING_SLACK} bytes beyond the {total} the header declares: refusing to inflate it further"
                ),
            ));
        }
    }
    if bad_count > 0 {
        return Err(NiftiError::NonFinite {
            path: path.to_path_buf(),
            count: bad_count,
            first,
        });
    }
    Ok(Image {
        dims: info.dims,
        data,
        affine: info.affine,
    })
}
