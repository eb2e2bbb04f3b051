//! The NIfTI reader on hand-made files: every supported datatype, both endiannesses,
//! scl_slope/scl_inter, sform/qform/pixdim precedence as nibabel, 4-D channel selection, and the
//! clear, file-naming errors for odd inputs (truncated gzip, NIfTI-2, unsupported datatype, 5-D,
//! zero-sized dims, NaN voxels, dataset.json listing missing files); `prepare --skip-bad`.

use std::io::Write;
use std::path::{Path, PathBuf};

use ldm_io::nifti::NiftiError;
use ldm_trainer::data::{discover, read_volume, write_volume, DataError, PreprocessCache, PreprocessConfig, Volume};

/// Header fields a test may set.
#[derive(Clone)]
struct Hdr {
    big: bool,
    dims: Vec<i16>,
    datatype: i16,
    bitpix: i16,
    pixdim: [f32; 4],
    slope: f32,
    inter: f32,
    qform_code: i16,
    sform_code: i16,
    quat: [f32; 6],
    srow: [[f32; 4]; 3],
    sizeof_hdr: i32,
}

impl Default for Hdr {
    fn default() -> Self {
        Hdr {
            big: false,
            dims: vec![4, 3, 2],
            datatype: 16,
            bitpix: 32,
            pixdim: [1.0, 2.0, 3.0, 4.0],
            slope: 1.0,
            inter: 0.0,
            qform_code: 0,
            sform_code: 0,
            quat: [0.0; 6],
            srow: [[0.0; 4]; 3],
            sizeof_hdr: 348,
        }
    }
}

fn header_bytes(h: &Hdr) -> Vec<u8> {
    let mut b = vec![0u8; 352];
    let i16b = |v: i16| if h.big { v.to_be_bytes() } else { v.to_le_bytes() };
    let i32b = |v: i32| if h.big { v.to_be_bytes() } else { v.to_le_bytes() };
    let f32b = |v: f32| if h.big { v.to_be_bytes() } else { v.to_le_bytes() };
    b[0..4].copy_from_slice(&i32b(h.sizeof_hdr));
    b[40..42].copy_from_slice(&i16b(h.dims.len() as i16));
    for (i, d) in h.dims.iter().enumerate() {
        b[42 + 2 * i..44 + 2 * i].copy_from_slice(&i16b(*d));
    }
    for i in h.dims.len()..7 {
        b[42 + 2 * i..44 + 2 * i].copy_from_slice(&i16b(1));
    }
    b[70..72].copy_from_slice(&i16b(h.datatype));
    b[72..74].copy_from_slice(&i16b(h.bitpix));
    for i in 0..4 {
        b[76 + 4 * i..80 + 4 * i].copy_from_slice(&f32b(h.pixdim[i]));
    }
    b[108..112].copy_from_slice(&f32b(352.0));
    b[112..116].copy_from_slice(&f32b(h.slope));
    b[116..120].copy_from_slice(&f32b(h.inter));
    b[252..254].copy_from_slice(&i16b(h.qform_code));
    b[254..256].copy_from_slice(&i16b(h.sform_code));
    for i in 0..6 {
        b[256 + 4 * i..260 + 4 * i].copy_from_slice(&f32b(h.quat[i]));
    }
    for r in 0..3 {
        for c in 0..4 {
            let o = 280 + 16 * r + 4 * c;
            b[o..o + 4].copy_from_slice(&f32b(h.srow[r][c]));
        }
    }
    b[344..348].copy_from_slice(b"n+1\0");
    b
}

/// Voxel values in file order (x fastest) encoded as `datatype`.
fn encode(h: &Hdr, values: &[f64]) -> Vec<u8> {
    let mut out = Vec::new();
    for &v in values {
        macro_rules! put {
            ($t:ty) => {{
                let x = v as $t;
                out.extend_from_slice(&if h.big { x.to_be_bytes() } else { x.to_le_bytes() });
            }};
        }
        match h.datatype {
            2 => put!(u8),
            256 => put!(i8),
            4 => put!(i16),
            512 => put!(u16),
            8 => put!(i32),
            768 => put!(u32),
            1024 => put!(i64),
            1280 => put!(u64),
            16 => put!(f32),
            64 => put!(f64),
            _ => out.extend(std::iter::repeat(0u8).take((h.bitpix / 8) as usize)),
        }
    }
    out
}

fn write_file(path: &Path, h: &Hdr, values: &[f64], gz: bool) {
    let mut bytes = header_bytes(h);
    bytes.extend(encode(h, values));
    if gz {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&bytes).unwrap();
        bytes = e.finish().unwrap();
    }
    std::fs::write(path, bytes).unwrap();
}

fn file_values(n: usize) -> Vec<f64> {
    (0..n).map(|i| (i % 97) as f64).collect()
}

#[test]
fn every_datatype_both_endiannesses_with_scaling() {
    let tmp = tempfile::tempdir().unwrap();
    let types: [(i16, i16); 10] = [
        (2, 8),
        (256, 8),
        (4, 16),
        (512, 16),
        (8, 32),
        (768, 32),
        (1024, 64),
        (1280, 64),
        (16, 32),
        (64, 64),
    ];
    for (dt, bp) in types {
        for big in [false, true] {
            for (slope, inter) in [(1.0f32, 0.0f32), (0.5, -3.0), (0.0, 7.0)] {
                let h = Hdr {
                    big,
                    datatype: dt,
                    bitpix: bp,
                    slope,
                    inter,
                    ..Default::default()
                };
                let vals = file_values(24);
                let p = tmp.path().join(format!("t{dt}_{big}_{slope}.nii"));
                write_file(&p, &h, &vals, big);
                let v = read_volume(&p, None).unwrap_or_else(|e| panic!("{dt} {big}: {e}"));
                assert_eq!(v.dims, [4, 3, 2]);
                // slope 0 means "no scaling" (nibabel)
                let (s, i) = if slope == 0.0 {
                    (1.0, 0.0)
                } else {
                    (slope as f64, inter as f64)
                };
                for z in 0..2 {
                    for y in 0..3 {
                        for x in 0..4 {
                            let want = vals[x + 4 * (y + 3 * z)] * s + i;
                            assert_eq!(v.at(x, y, z) as f64, want, "dt {dt} big {big} at {x},{y},{z}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn affine_precedence_follows_nibabel() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("a.nii");
    let vals = file_values(24);
    let srow = [[1.5, 0.0, 0.0, -10.0], [0.0, 2.5, 0.0, 20.0], [0.0, 0.0, 3.5, 30.0]];
    // sform wins when sform_code > 0
    let h = Hdr {
        sform_code: 2,
        qform_code: 1,
        srow,
        quat: [0.0, 0.0, 1.0, 5.0, 6.0, 7.0],
        ..Default::default()
    };
    write_file(&p, &h, &vals, false);
    let v = read_volume(&p, None).unwrap();
    assert_eq!(v.affine[0], [1.5, 0.0, 0.0, -10.0]);
    // qform when sform_code is 0: quaternion (0, 0, 1) = 180 degrees about z; qfac -1 flips z
    let h = Hdr {
        sform_code: 0,
        qform_code: 1,
        quat: [0.0, 0.0, 1.0, 5.0, 6.0, 7.0],
        pixdim: [-1.0, 2.0, 3.0, 4.0],
        ..h
    };
    write_file(&p, &h, &vals, false);
    let v = read_volume(&p, None).unwrap();
    let want = [
        [-2.0, 0.0, 0.0, 5.0],
        [0.0, -3.0, 0.0, 6.0],
        [0.0, 0.0, -4.0, 7.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    for i in 0..4 {
        for j in 0..4 {
            assert!((v.affine[i][j] - want[i][j]).abs() < 1e-6, "{:?}", v.affine);
        }
    }
    // neither: pixdim only, x flipped, origin at the centre
    let h = Hdr {
        sform_code: 0,
        qform_code: 0,
        pixdim: [1.0, 2.0, 3.0, 4.0],
        ..h
    };
    write_file(&p, &h, &vals, false);
    let v = read_volume(&p, None).unwrap();
    assert_eq!(v.affine[0], [-2.0, 0.0, 0.0, 3.0]);
    assert_eq!(v.affine[1], [0.0, 3.0, 0.0, -3.0]);
    assert_eq!(v.affine[2], [0.0, 0.0, 4.0, -2.0]);
}

#[test]
fn four_d_channel_selection() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("m.nii.gz");
    let h = Hdr {
        dims: vec![4, 3, 2, 3],
        datatype: 4,
        bitpix: 16,
        ..Default::default()
    };
    let vals: Vec<f64> = (0..72).map(|i| i as f64).collect();
    write_file(&p, &h, &vals, true);
    for c in 0..3 {
        let v = read_volume(&p, Some(c)).unwrap();
        assert_eq!(v.at(1, 2, 1) as f64, vals[c * 24 + 1 + 4 * (2 + 3)]);
    }
    let e = read_volume(&p, Some(3)).unwrap_err();
    assert!(matches!(e, DataError::Nifti(NiftiError::BadChannel { channels: 3, .. })), "{e}");
    let e = read_volume(&p, None).unwrap_err();
    assert!(e.to_string().contains("--channel"), "{e}");
}

/// Assert that reading fails with an error that names the file.
fn expect_error(path: &Path, what: &str) -> DataError {
    let e = read_volume(path, Some(0)).expect_err(what);
    let msg = e.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "{what}: error does not name the file: {msg}"
    );
    e
}

#[test]
fn odd_inputs_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let vals = file_values(24);
    // truncated gzip
    let p = d.join("trunc.nii.gz");
    let h4000 = Hdr {
        dims: vec![20, 20, 10],
        ..Default::default()
    };
    write_file(&d.join("tmp.nii.gz"), &h4000, &file_values(4000), true);
    let full = std::fs::read(d.join("tmp.nii.gz")).unwrap();
    for cut in [full.len() / 2, full.len() - 4] {
        // cut in the deflate data, and inside the gzip trailer (CRC/size)
        std::fs::write(&p, &full[..cut]).unwrap();
        let e = expect_error(&p, "truncated gzip");
        assert!(
            e.to_string().contains("truncated") || e.to_string().contains("gzip"),
            "{e}"
        );
    }
    // truncated plain file
    let p = d.join("short.nii");
    write_file(&p, &Hdr::default(), &vals[..10], false);
    assert!(expect_error(&p, "short").to_string().contains("truncated"));
    // NIfTI-2
    let p = d.join("n2.nii");
    write_file(
        &p,
        &Hdr {
            sizeof_hdr: 540,
            ..Default::default()
        },
        &vals,
        false,
    );
    assert!(matches!(expect_error(&p, "nifti2"), DataError::Nifti(NiftiError::Nifti2 { .. })));
    // not NIfTI at all
    let p = d.join("junk.nii");
    std::fs::write(&p, vec![7u8; 400]).unwrap();
    expect_error(&p, "junk");
    // unsupported datatypes: RGB24, complex64
    for (dt, bp) in [(128i16, 24i16), (32, 64)] {
        let p = d.join(format!("dt{dt}.nii"));
        write_file(
            &p,
            &Hdr {
                datatype: dt,
                bitpix: bp,
                ..Default::default()
            },
            &vals,
            false,
        );
        assert!(matches!(
            expect_error(&p, "datatype"),
            DataError::Nifti(NiftiError::UnsupportedDatatype { .. })
        ));
    }
    // 5-D
    let p = d.join("five.nii");
    write_file(
        &p,
        &Hdr {
            dims: vec![4, 3, 2, 1, 2],
            ..Default::default()
        },
        &file_values(48),
        false,
    );
    assert!(expect_error(&p, "5-D").to_string().contains("5-D"));
    // zero-sized dimension
    let p = d.join("zero.nii");
    write_file(
        &p,
        &Hdr {
            dims: vec![4, 0, 2],
            ..Default::default()
        },
        &[],
        false,
    );
    assert!(expect_error(&p, "zero").to_string().contains("size 0"));
    // NaN voxels
    let p = d.join("nan.nii");
    let mut nan = vals.clone();
    nan[5] = f64::NAN;
    write_file(&p, &Hdr::default(), &nan, false);
    assert!(matches!(
        expect_error(&p, "nan"),
        DataError::Nifti(NiftiError::NonFinite {
            count: 1,
            first: [1, 1, 0],
            ..
        })
    ));
    // int16 voxels scaled past float32's range (finite in f64): refused as stored, not as inf
    let p = d.join("overflow.nii");
    let mut big = vec![0.0; vals.len()];
    big[5] = 20.0;
    let h = Hdr {
        datatype: 4,
        bitpix: 16,
        slope: 1e38,
        ..Default::default()
    };
    write_file(&p, &h, &big, false);
    let e = expect_error(&p, "overflow");
    assert!(
        matches!(e, DataError::Nifti(NiftiError::NonFinite { count: 1, first: [1, 1, 0], .. })),
        "{e}"
    );
    assert!(e.to_string().contains("NaN or infinite as float32, after scl_slope"), "{e}");
    // a header that claims far more data than the file could hold: refused before allocating
    let p = d.join("huge.nii.gz");
    write_file(
        &p,
        &Hdr {
            dims: vec![1000, 1000, 1000],
            ..Default::default()
        },
        &vals,
        true,
    );
    assert!(expect_error(&p, "huge").to_string().contains("impossible"));
    let p = d.join("huge.nii");
    write_file(
        &p,
        &Hdr {
            dims: vec![32767, 32767, 32767],
            ..Default::default()
        },
        &vals,
        false,
    );
    assert!(expect_error(&p, "huge plain").to_string().contains("limit"));
    // missing file
    expect_error(&d.join("absent.nii"), "absent");
}

#[test]
fn dataset_json_listing_missing_files() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir(d.join("imagesTr")).unwrap();
    write_file(&d.join("imagesTr/a.nii.gz"), &Hdr::default(), &file_values(24), true);
    std::fs::write(d.join("imagesTr/._a.nii.gz"), b"resource fork").unwrap();
    std::fs::write(
        d.join("dataset.json"),
        r#"{"training": [{"image": "./imagesTr/a.nii.gz"}, {"image": "./imagesTr/gone.nii.gz"}]}"#,
    )
    .unwrap();
    let e = discover(d, false).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("dataset.json") && msg.contains("gone.nii.gz"), "{msg}");
    let ds = discover(d, true).unwrap();
    assert_eq!(ds.images.len(), 1);
    assert_eq!(ds.missing.len(), 1);
    // without dataset.json: the folder's imagesTr, resource forks ignored
    std::fs::remove_file(d.join("dataset.json")).unwrap();
    let ds = discover(d, false).unwrap();
    assert_eq!(ds.images, vec![d.join("imagesTr/a.nii.gz")]);
}

#[test]
fn write_read_roundtrip_and_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let affine = [
        [0.0, -1.2, 0.0, 10.0],
        [1.1, 0.0, 0.0, -5.0],
        [0.0, 0.0, 1.3, 2.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let dims = [20, 22, 18];
    let data: Vec<f32> = (0..dims.iter().product::<usize>())
        .map(|i| ((i * 7919) % 1000) as f32 * 0.25)
        .collect();
    let v = Volume::new(dims, data, affine).unwrap();
    for name in ["v.nii", "v.nii.gz"] {
        let p = tmp.path().join(name);
        write_volume(&p, &v, "test").unwrap();
        let back = read_volume(&p, None).unwrap();
        assert_eq!(back.dims, v.dims);
        assert_eq!(back.data, v.data);
        for i in 0..4 {
            for j in 0..4 {
                assert!((back.affine[i][j] - affine[i][j]).abs() < 1e-6);
            }
        }
    }
    // no temp files left behind
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 2);
    let src = tmp.path().join("v.nii.gz");
    let cfg = PreprocessConfig {
        roi: [16, 16, 16],
        ..Default::default()
    };
    let cache = PreprocessCache::new(tmp.path().join("cache"));
    let (a, hit_a) = cache.get_or_compute(&src, &cfg).unwrap();
    let (b, hit_b) = cache.get_or_compute(&src, &cfg).unwrap();
    assert!(!hit_a && hit_b);
    assert_eq!(a, b);
    let other = PreprocessConfig {
        spacing: [2.0; 3],
        ..cfg
    };
    assert!(
        !cache.get_or_compute(&src, &other).unwrap().1,
        "settings are part of the key"
    );
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_brats-ldm"))
}

#[test]
fn prepare_cli_skip_bad() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let h = Hdr {
        dims: vec![30, 30, 20],
        datatype: 4,
        bitpix: 16,
        ..Default::default()
    };
    write_file(&data.join("good.nii.gz"), &h, &file_values(18000), true);
    write_file(
        &data.join("bad.nii"),
        &Hdr {
            sizeof_hdr: 540,
            ..Default::default()
        },
        &file_values(24),
        false,
    );
    let out = tmp.path().join("out");
    let run = |skip: bool| {
        let mut c = std::process::Command::new(bin());
        c.args(["prepare", "--data"])
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .args(["--crop", "24,24,24"]);
        if skip {
            c.arg("--skip-bad");
        }
        c.output().unwrap()
    };
    let o = run(false);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.nii") && err.contains("NIfTI-2"), "{err}");
    let o = run(true);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("warning") && err.contains("bad.nii"), "{err}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("good.nii.gz") && stdout.contains("skipped 1"),
        "{stdout}"
    );
    let v = read_volume(&out.join("good.nii.gz"), None).unwrap();
    assert_eq!(v.dims, [24, 24, 24]);
    assert!((v.spacing()[0] - 1.1).abs() < 1e-6);
}
