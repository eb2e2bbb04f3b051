//! Tests of the NIfTI module: `generate`'s header geometry, the quaternion against nifti1.h's
//! inverse formula, headers as the `nifti` crate reads them, write -> read round trips of every
//! element type, and hostile inputs (bombs, huge headers, truncation, FIFOs, devices).

mod cli_headers {
    use super::super::*;

    /// Rotation matrix from quaternion + qfac, as nifti1.h defines it (independent of `quaternion`).
    fn rotation_from_quaternion(b: f64, c: f64, d: f64, qfac: f64) -> [[f64; 3]; 3] {
        let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
        let mut r = [
            [
                a * a + b * b - c * c - d * d,
                2.0 * (b * c - a * d),
                2.0 * (b * d + a * c),
            ],
            [
                2.0 * (b * c + a * d),
                a * a + c * c - b * b - d * d,
                2.0 * (c * d - a * b),
            ],
            [
                2.0 * (b * d - a * c),
                2.0 * (c * d + a * b),
                a * a + d * d - c * c - b * b,
            ],
        ];
        for row in r.iter_mut() {
            row[2] *= qfac;
        }
        r
    }

    #[test]
    fn every_orientation_round_trips_through_the_quaternion() {
        let letters = [['R', 'L'], ['A', 'P'], ['S', 'I']];
        let perms = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        let mut count = 0;
        for p in perms {
            for signs in 0..8 {
                let code: String = (0..3).map(|a| letters[p[a]][(signs >> a) & 1]).collect();
                let r = orientation_matrix(&code).unwrap();
                let (q, qfac) = quaternion(r);
                let back = rotation_from_quaternion(q[0], q[1], q[2], qfac);
                for w in 0..3 {
                    for a in 0..3 {
                        assert!(
                            (back[w][a] - r[w][a]).abs() < 1e-6,
                            "{code}: {back:?} vs {r:?}"
                        );
                    }
                }
                count += 1;
            }
        }
        assert_eq!(count, 48);
    }

    #[test]
    fn ras_affine_is_diagonal_and_centred() {
        let m = affine("RAS", [1.1, 1.1, 1.1], [144, 176, 112]).unwrap();
        assert_eq!(m[0][0], 1.1f32 as f64);
        assert_eq!(m[0][1], 0.0);
        assert!((m[0][3] + 1.1f32 as f64 * 143.0 / 2.0).abs() < 1e-9);
        assert!((m[2][3] + 1.1f32 as f64 * 111.0 / 2.0).abs() < 1e-9);
        let m = affine("LPS", [1.0, 2.0, 3.0], [3, 3, 3]).unwrap();
        assert_eq!(m[0][0], -1.0);
        assert_eq!(m[1][1], -2.0);
        assert_eq!(m[2][2], 3.0);
        assert_eq!(m[0][3], 1.0);
        assert_eq!(m[1][3], 2.0);
        assert_eq!(m[2][3], -3.0);
    }

    #[test]
    fn bad_orientation_and_spacing_are_rejected() {
        for code in ["RAR", "RA", "RASX", "XYZ", "", "RRS"] {
            assert!(
                matches!(orientation_matrix(code), Err(GeometryError::Orientation(_))),
                "{code}"
            );
        }
        assert!(matches!(
            affine("RAS", [1.0, 0.0, 1.0], [2, 2, 2]),
            Err(GeometryError::Spacing(_))
        ));
        assert!(matches!(
            affine("RAS", [1.0, f32::NAN, 1.0], [2, 2, 2]),
            Err(GeometryError::Spacing(_))
        ));
    }

    #[test]
    fn transpose_puts_d_fastest() {
        let header = VolumeHeader {
            shape: [1, 2, 3, 4],
            spacing_mm: [1.0; 3],
            orientation: "RAS".into(),
            descrip: "t".into(),
        };
        let data: Vec<f32> = (0..24).map(|x| x as f32).collect();
        let mut out = Vec::new();
        write_volume(&mut out, &header, &data).unwrap();
        assert_eq!(out.len(), header.file_bytes());
        let vals: Vec<f32> = out[DATA_OFFSET..]
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        // voxel (i, j, k) at i + 2 j + 6 k holds data[i*12 + j*4 + k]
        for k in 0..4 {
            for j in 0..3 {
                for i in 0..2 {
                    assert_eq!(vals[i + 2 * j + 6 * k], (i * 12 + j * 4 + k) as f32);
                }
            }
        }
        let summary = read_header_summary(&mut &out[..]).unwrap().unwrap();
        assert!(summary.matches(&header));
        let other = VolumeHeader {
            descrip: "u".into(),
            ..header.clone()
        };
        assert!(!summary.matches(&other));
        assert!(write_volume(&mut Vec::new(), &header, &data[1..]).is_err());
    }

    #[test]
    fn long_description_and_bad_shapes_are_errors() {
        let mut header = VolumeHeader {
            shape: [1, 2, 3, 4],
            spacing_mm: [1.0; 3],
            orientation: "RAS".into(),
            descrip: "x".repeat(80),
        };
        assert!(matches!(
            header.to_bytes(),
            Err(GeometryError::Description(_))
        ));
        header.descrip = "ok".into();
        header.shape = [1, 0, 3, 4];
        assert!(matches!(header.to_bytes(), Err(GeometryError::Shape(_))));
        header.shape = [1, 40000, 3, 4];
        assert!(matches!(header.to_bytes(), Err(GeometryError::Shape(_))));
        assert_eq!(read_header_summary(&mut &[0u8; 10][..]).unwrap(), None);
    }
}

/// The header as an independent reader (the `nifti` crate) sees it.
mod read_back {
    use super::super::*;

    #[test]
    fn nifti_crate_reads_our_header_fields() {
        for (code, spacing) in [("RAS", [1.1f32, 1.1, 1.1]), ("LPI", [0.5, 1.0, 2.0])] {
            let h = VolumeHeader {
                shape: [1, 6, 5, 4],
                spacing_mm: spacing,
                orientation: code.into(),
                descrip: "seed=3 model=abc".into(),
            };
            let mut bytes = Vec::new();
            write_volume(&mut bytes, &h, &vec![0.0; 120]).unwrap();
            let r = ::nifti::NiftiHeader::from_reader(std::io::Cursor::new(&bytes)).unwrap();
            assert_eq!(r.sizeof_hdr, 348);
            assert_eq!(r.dim, [3, 6, 5, 4, 1, 1, 1, 1]);
            assert_eq!(r.datatype, DT_FLOAT32);
            assert_eq!(r.bitpix, 32);
            assert_eq!(&r.pixdim[1..4], &spacing[..]);
            assert_eq!(r.vox_offset, 352.0);
            assert_eq!((r.qform_code, r.sform_code), (2, 2));
            assert_eq!(r.xyzt_units, 2);
            assert_eq!(&r.descrip[..16], b"seed=3 model=abc");
            assert_eq!(&r.magic, b"n+1\0");
            let m = affine(code, spacing, [6, 5, 4]).unwrap();
            for (row, got) in [r.srow_x, r.srow_y, r.srow_z].iter().enumerate() {
                for col in 0..4 {
                    assert_eq!(got[col], m[row][col] as f32, "{code} srow {row} col {col}");
                }
            }
            assert_eq!(
                [r.quatern_x, r.quatern_y, r.quatern_z],
                [m[0][3] as f32, m[1][3] as f32, m[2][3] as f32]
            );
        }
    }
}

mod round_trip {
    use super::super::*;
    use crate::budget::Budget;
    use std::path::Path;

    fn header(dims: [usize; 3], channels: usize) -> ImageHeader {
        ImageHeader {
            dims,
            channels,
            affine: [
                [0.0, -1.2, 0.0, 10.0],
                [1.1, 0.0, 0.0, -5.0],
                [0.0, 0.0, 1.3, 2.0],
            ],
            xform_code: XFORM_SCANNER_ANAT,
            descrip: "round trip".into(),
        }
    }

    fn check_affine(got: &crate::affine::Affine, want: &[[f64; 4]; 3]) {
        for i in 0..3 {
            for j in 0..4 {
                assert_eq!(got[i][j], want[i][j] as f32 as f64, "affine [{i}][{j}]");
            }
        }
    }

    #[test]
    fn f32_i16_u8_in_nii_and_nii_gz_read_back_identically() {
        let dir = tempfile::tempdir().unwrap();
        let dims = [5, 4, 3];
        let n = 60;
        let f: Vec<f32> = (0..2 * n)
            .map(|i| (i as f32 * 0.37).sin() * 100.0)
            .collect();
        let s: Vec<i16> = (0..2 * n).map(|i| (i as i16 - 50) * 301).collect();
        let b: Vec<u8> = (0..n).map(|i| (i * 7 % 256) as u8).collect();
        for name in ["v.nii", "v.nii.gz"] {
            let p = dir.path().join(name);
            write_image_file(&p, &header(dims, 2), &f).unwrap();
            for c in 0..2 {
                let img = read_volume(&p, Some(c)).unwrap();
                assert_eq!(img.dims, dims);
                assert_eq!(img.data, f[c * n..(c + 1) * n]);
                check_affine(&img.affine, &header(dims, 2).affine);
            }
            let info = read_info(&p).unwrap();
            assert_eq!((info.channels, info.datatype), (2, NiftiType::Float32));
            assert_eq!(info.affine_source, "sform");
            write_image_file(&p, &header(dims, 2), &s).unwrap();
            let img = read_volume(&p, Some(1)).unwrap();
            let want: Vec<f32> = s[n..].iter().map(|&v| v as f32).collect();
            assert_eq!(img.data, want);
            assert_eq!(read_info(&p).unwrap().datatype, NiftiType::Int16);
            write_image_file(&p, &header(dims, 1), &b).unwrap();
            let img = read_volume(&p, None).unwrap();
            assert_eq!(img.data, b.iter().map(|&v| v as f32).collect::<Vec<_>>());
            assert_eq!(read_info(&p).unwrap().datatype, NiftiType::Uint8);
        }
        // nothing but the two outputs: no temporary files left
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn header_fields_survive_the_nifti_crate() {
        let h = header([6, 5, 4], 1);
        let mut bytes = Vec::new();
        write_image(&mut bytes, &h, &[0u8; 120]).unwrap();
        let r = ::nifti::NiftiHeader::from_reader(std::io::Cursor::new(&bytes)).unwrap();
        assert_eq!(r.dim, [3, 6, 5, 4, 1, 1, 1, 1]);
        assert_eq!((r.datatype, r.bitpix), (2, 8));
        assert_eq!((r.qform_code, r.sform_code), (1, 1));
        assert_eq!(&r.descrip[..10], b"round trip");
        assert_eq!(r.pixdim[1..4], [1.1f32, 1.2, 1.3]);
        // the qform (quaternion path) gives the same affine as the sform
        let mut q = bytes.clone();
        q[254] = 0; // sform_code 0: the reader falls back to the qform
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("q.nii");
        std::fs::write(&p, &q).unwrap();
        let info = read_info(&p).unwrap();
        assert_eq!(info.affine_source, "qform");
        for i in 0..3 {
            for j in 0..4 {
                assert!(
                    (info.affine[i][j] - h.affine[i][j]).abs() < 1e-6,
                    "{:?}",
                    info.affine
                );
            }
        }
    }

    #[test]
    fn bad_headers_are_refused_by_the_writer() {
        let mut h = header([2, 2, 2], 1);
        assert!(write_image(&mut Vec::new(), &h, &[0f32; 7]).is_err());
        h.dims = [0, 2, 2];
        assert!(h.to_bytes::<f32>().is_err());
        h.dims = [2, 2, 2];
        h.affine[0][0] = f64::NAN;
        assert!(h.to_bytes::<f32>().is_err());
        let dir = tempfile::tempdir().unwrap();
        assert!(
            write_image_file(&dir.path().join("x.img"), &header([2, 2, 2], 1), &[0f32; 8]).is_err()
        );
    }

    /// A plain float32 header (RAS 1 mm) claiming `dims`.
    fn raw_header(dims: [usize; 3]) -> Vec<u8> {
        let mut h = header([1, 1, 1], 1);
        h.affine = [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
        ];
        let mut b = h.to_bytes::<f32>().unwrap().to_vec();
        for (n, d) in dims.iter().enumerate() {
            b[42 + 2 * n..44 + 2 * n].copy_from_slice(&(*d as i16).to_le_bytes());
        }
        b
    }

    fn gzip_of(parts: &[&[u8]], zeros: u64) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for p in parts {
            e.write_all(p).unwrap();
        }
        let block = vec![0u8; 1 << 20];
        let mut left = zeros;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            e.write_all(&block[..n]).unwrap();
            left -= n as u64;
        }
        e.finish().unwrap()
    }

    #[test]
    fn a_declared_bomb_is_refused_by_the_budget_before_inflating() {
        // 1024^3 float32 declared (4 GiB) in a 4 MiB file, which deflate could inflate that far:
        // the budget alone decides, nothing is inflated or allocated.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bomb.nii.gz");
        let noise: Vec<u8> = (0..4u32 << 20)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
        std::io::Write::write_all(&mut e, &raw_header([1024, 1024, 1024])).unwrap();
        std::io::Write::write_all(&mut e, &noise).unwrap();
        std::fs::write(&p, e.finish().unwrap()).unwrap();
        let small = dir.path().join("small.nii.gz");
        std::fs::write(
            &small,
            gzip_of(&[&raw_header([1024, 1024, 1024])], 16 << 20),
        )
        .unwrap();
        let e = read_volume(&small, None).unwrap_err();
        assert!(e.to_string().contains("impossible"), "{e}");
        let e = read_volume_within(&p, None, Budget::new(1 << 30)).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, NiftiError::TooLarge { .. }), "{msg}");
        assert!(msg.contains("needs 4295032832 bytes (4.00 GiB)"), "{msg}");
    }

    #[test]
    fn a_stream_longer_than_its_header_is_not_inflated_to_the_end() {
        // 8^3 float32 declared, then 64 MiB of zeros: refused after the declared data + slack.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("long.nii.gz");
        std::fs::write(&p, gzip_of(&[&raw_header([8, 8, 8])], 64 << 20)).unwrap();
        let e = read_volume(&p, None).unwrap_err();
        assert!(e.to_string().contains("refusing to inflate"), "{e}");
        // within the slack it is accepted
        std::fs::write(&p, gzip_of(&[&raw_header([8, 8, 8])], 2048 + 1000)).unwrap();
        assert_eq!(read_volume(&p, None).unwrap().data, vec![0.0; 512]);
    }

    #[test]
    fn devices_fifos_and_truncated_files_are_refused() {
        let e = read_volume(Path::new("/dev/zero"), None).unwrap_err();
        assert!(e.to_string().contains("not a NIfTI-1 file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.nii");
        if std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
        {
            let e = read_volume(&fifo, None).unwrap_err();
            assert!(e.to_string().contains("FIFO"), "{e}");
        }
        let p = dir.path().join("t.nii");
        let mut b = raw_header([8, 8, 8]);
        b.extend_from_slice(&[0u8; 100]);
        std::fs::write(&p, &b).unwrap();
        let e = read_volume(&p, None).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}
