//! Structure-aware NIfTI-1: `arbitrary` builds either a hostile file around a header with a valid
//! `sizeof_hdr` and magic (any dims, datatype, vox_offset, pixdim, qform/sform, scaling,
//! endianness, data length, gzip or not), which reaches the reader's size checks, affine choice
//! and decoding on every input; or a round trip: an image written by the one writer
//! (`ldm_io::nifti::write_image`, as a `.nii` or deterministic `.nii.gz`) must read back with the
//! identical array, affine and header fields.

#![no_main]

use std::io::Write;

use ldm_io::affine::{identity, inverse, Affine};
use ldm_io::nifti::{
    read_header_summary, read_info, read_volume_within, write_image, Element, ImageHeader,
    NiftiError, NiftiType, DATA_OFFSET,
};
use ldm_io::Budget;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Case {
    Hostile(Hostile),
    RoundTrip(RoundTrip),
}

#[derive(Arbitrary, Debug)]
struct Hostile {
    big_endian: bool,
    gzip: bool,
    /// 0: n+1, 1: ni1, 2: no magic.
    magic: u8,
    /// 0..: 348; 1: 540 (NIfTI-2); 2: junk.
    sizeof_hdr: u8,
    dim: [i16; 8],
    datatype: i16,
    bitpix: i16,
    /// Extension bytes before the data (vox_offset = 352 + 4 * this) unless `vox_offset` is set.
    extension_words: u8,
    vox_offset: Option<f32>,
    pixdim: [f32; 8],
    scl: [f32; 2],
    qform_code: i16,
    sform_code: i16,
    quatern: [f32; 6],
    srow: [[f32; 4]; 3],
    /// Whether the data has exactly the declared length (else the raw tail as given).
    exact_len: bool,
    data: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct RoundTrip {
    dims: [u8; 3],
    channels: u8,
    affine: [[f32; 4]; 3],
    xform_code: bool,
    descrip: String,
    /// 0: float32, 1: int16, 2: uint8.
    element: u8,
    gzip: bool,
    values: Vec<u8>,
}

fuzz_target!(|case: Case| {
    ldm_fuzz::run(&[], |_| match case {
        Case::Hostile(h) => hostile(h),
        Case::RoundTrip(r) => round_trip(r),
    })
});

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = ldm_io::gzip::encoder(Vec::new());
    e.write_all(bytes).expect("in-memory gzip");
    e.finish().expect("in-memory gzip")
}

fn hostile(h: Hostile) {
    let mut b = vec![0u8; 348];
    let put = |b: &mut Vec<u8>, at: usize, bytes: &[u8]| {
        let mut v = bytes.to_vec();
        if h.big_endian {
            v.reverse();
        }
        b[at..at + v.len()].copy_from_slice(&v);
    };
    let sizeof: i32 = match h.sizeof_hdr % 3 {
        0 => 348,
        1 => 540,
        _ => 349,
    };
    put(&mut b, 0, &sizeof.to_le_bytes());
    for (i, d) in h.dim.iter().enumerate() {
        put(&mut b, 40 + 2 * i, &d.to_le_bytes());
    }
    put(&mut b, 70, &h.datatype.to_le_bytes());
    put(&mut b, 72, &h.bitpix.to_le_bytes());
    for (i, p) in h.pixdim.iter().enumerate() {
        put(&mut b, 76 + 4 * i, &p.to_le_bytes());
    }
    let offset = h
        .vox_offset
        .unwrap_or(352.0 + 4.0 * h.extension_words as f32);
    put(&mut b, 108, &offset.to_le_bytes());
    put(&mut b, 112, &h.scl[0].to_le_bytes());
    put(&mut b, 116, &h.scl[1].to_le_bytes());
    put(&mut b, 252, &h.qform_code.to_le_bytes());
    put(&mut b, 254, &h.sform_code.to_le_bytes());
    for (i, q) in h.quatern.iter().enumerate() {
        put(&mut b, 256 + 4 * i, &q.to_le_bytes());
    }
    for (r, row) in h.srow.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            put(&mut b, 280 + 16 * r + 4 * c, &v.to_le_bytes());
        }
    }
    let magic: &[u8; 4] = match h.magic % 3 {
        0 => b"n+1\0",
        1 => b"ni1\0",
        _ => b"xyz\0",
    };
    b[344..348].copy_from_slice(magic);
    b.resize(352 + 4 * h.extension_words as usize, 0);
    if h.exact_len {
        // The declared data length, when it is small: the data bytes repeated to fill it.
        let ndim = h.dim[0].clamp(0, 7) as usize;
        let voxels = h.dim[1..=ndim]
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d.max(0) as u64));
        let bytes = voxels.and_then(|v| v.checked_mul((h.bitpix.max(8) / 8) as u64));
        match bytes {
            Some(n) if n <= 1 << 20 && !h.data.is_empty() => {
                b.extend(h.data.iter().cycle().take(n as usize));
            }
            _ => b.extend_from_slice(&h.data),
        }
    } else {
        b.extend_from_slice(&h.data);
    }
    let file = if h.gzip { gz(&b) } else { b };
    ldm_fuzz::scratch::dump("nifti_header.nii", &file);
    let path = ldm_fuzz::scratch::file("volume.nii", &file);
    let info = read_info(&path);
    let budget = Budget::new(ldm_fuzz::LIMIT as u64 / 4);
    for channel in [None, Some(0), Some(1)] {
        if let Ok(image) = read_volume_within(&path, channel, budget) {
            let info = info
                .as_ref()
                .expect("a readable volume has a readable header");
            assert_eq!(image.data.len(), info.dims.iter().product::<usize>());
            assert!(image.data.iter().all(|v| v.is_finite()));
        }
    }
}

/// Values of element type `T` from the fuzzer's bytes, finite, cycling to fill `n`.
fn values<T: Element>(raw: &[u8], n: usize, make: impl Fn(&[u8]) -> T) -> Vec<T> {
    let fallback = vec![0u8; T::BYTES];
    let mut chunks = raw.chunks_exact(T::BYTES).cycle();
    (0..n)
        .map(|_| make(chunks.next().unwrap_or(&fallback)))
        .collect()
}

fn round_trip(r: RoundTrip) {
    let dims = r.dims.map(|d| 1 + d as usize % 6);
    let channels = 1 + r.channels as usize % 3;
    let mut descrip: String = r.descrip.chars().filter(|&c| c != '\0').collect();
    while descrip.len() > 79 {
        descrip.pop();
    }
    let header = ImageHeader {
        dims,
        channels,
        affine: r.affine.map(|row| row.map(|v| v as f64)),
        xform_code: if r.xform_code { 2 } else { 1 },
        descrip,
    };
    let n = header.len();
    // Every value as float32, in the array's C order [C, X, Y, Z].
    let (bytes, expect, datatype): (Result<Vec<u8>, _>, Vec<f32>, NiftiType) = match r.element % 3 {
        0 => {
            let v = values(&r.values, n, |c| {
                let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                if x.is_finite() {
                    x
                } else {
                    0.0
                }
            });
            (encode(&header, &v), v.clone(), NiftiType::Float32)
        }
        1 => {
            let v = values(&r.values, n, |c| i16::from_le_bytes([c[0], c[1]]));
            (
                encode(&header, &v),
                v.iter().map(|&x| x as f32).collect(),
                NiftiType::Int16,
            )
        }
        _ => {
            let v = values(&r.values, n, |c| c[0]);
            (
                encode(&header, &v),
                v.iter().map(|&x| x as f32).collect(),
                NiftiType::Uint8,
            )
        }
    };
    let Ok(bytes) = bytes else {
        // The writer refuses only a header it cannot describe: a zero column or a non-finite entry.
        let a = header.affine;
        let zero_column = (0..3).any(|j| (0..3).all(|i| a[i][j] == 0.0));
        assert!(zero_column || a.iter().flatten().any(|v| !v.is_finite()));
        return;
    };
    let file = if r.gzip { gz(&bytes) } else { bytes.clone() };
    let path = ldm_fuzz::scratch::file(if r.gzip { "rt.nii.gz" } else { "rt.nii" }, &file);

    // The affine the reader must return: the sform rows as stored (float32), or a refusal when
    // that matrix is singular.
    let mut want: Affine = identity();
    for (row, given) in want.iter_mut().zip(&header.affine) {
        for (v, g) in row.iter_mut().zip(given) {
            *v = *g as f32 as f64;
        }
    }
    let info = match read_info(&path) {
        Ok(info) => info,
        Err(NiftiError::BadAffine { .. }) if inverse(&want).is_none() => return,
        Err(e) => panic!("the writer's file is refused: {e}"),
    };
    assert!(inverse(&want).is_some(), "a singular affine was accepted");
    assert_eq!(info.affine, want);
    assert_eq!(info.affine_source, "sform");
    assert_eq!(
        (info.dims, info.channels, info.datatype),
        (dims, channels, datatype)
    );
    assert_eq!((info.scl_slope, info.scl_inter), (1.0, 0.0));
    let summary = read_header_summary(&mut &bytes[..])
        .expect("in-memory read")
        .expect("our own header is recognised");
    assert_eq!(summary.descrip, header.descrip);
    assert_eq!(summary.vox_offset, DATA_OFFSET as f32);
    let ndim = if channels > 1 { 4 } else { 3 };
    assert_eq!(
        summary.dims[..4],
        [ndim, dims[0] as i16, dims[1] as i16, dims[2] as i16]
    );
    let per = dims.iter().product::<usize>();
    let budget = Budget::new(ldm_fuzz::LIMIT as u64 / 4);
    for c in 0..channels {
        let pick = if channels == 1 { None } else { Some(c) };
        let image =
            read_volume_within(&path, pick, budget).expect("the writer's volume reads back");
        assert_eq!(image.dims, dims);
        assert_eq!(image.affine, want);
        let got: Vec<u32> = image.data.iter().map(|v| v.to_bits()).collect();
        let exp: Vec<u32> = expect[c * per..(c + 1) * per]
            .iter()
            .map(|v| v.to_bits())
            .collect();
        assert_eq!(got, exp, "channel {c}");
    }
}

fn encode<T: Element>(header: &ImageHeader, data: &[T]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    write_image(&mut out, header, data)?;
    Ok(out)
}
