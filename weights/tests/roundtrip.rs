//! Write -> read round trips for every dtype, determinism, atomic file writes, and the writer's
//! refusals (missing, extra, duplicate, mis-shaped, mis-sized, non-finite tensors; bad config).

mod common;

use common::*;
use half::{bf16, f16};
use ldm_weights::format::ALIGN;
use ldm_weights::*;

fn expected_after(dtype: DType, v: &[f32]) -> Vec<f32> {
    match dtype {
        DType::F32 => v.to_vec(),
        DType::F16 => v.iter().map(|x| f16::from_f32(*x).to_f32()).collect(),
        DType::BF16 => v.iter().map(|x| bf16::from_f32(*x).to_f32()).collect(),
    }
}

#[test]
fn round_trip_every_dtype() {
    let cfg = small_config();
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let bytes = blob_bytes(&cfg, dtype);
        let blob = Blob::from_bytes(bytes.clone()).unwrap();
        assert_eq!(blob.config(), &cfg);
        assert_eq!(blob.format_version(), (2, 0));
        assert_eq!(blob.file_len(), bytes.len() as u64);
        let reference = reference_values(&cfg);
        assert_eq!(blob.tensors().len(), reference.len());
        for (info, (spec, v)) in blob.tensors().zip(&reference) {
            assert_eq!(info.name, spec.name, "canonical order");
            assert_eq!(info.shape, spec.shape);
            assert_eq!(info.dtype, dtype);
            assert_eq!(info.offset % ALIGN, 0);
            let view = blob.tensor(&spec.name).unwrap();
            assert_eq!(view.shape, spec.shape.as_slice());
            let got = view.to_f32_vec();
            // Bitwise: f32 exact, f16/bf16 exactly half's round-to-nearest-even conversion.
            let want = expected_after(dtype, v);
            assert_eq!(
                got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "{} {dtype:?}",
                spec.name
            );
            let mut buf = vec![0.0f32; v.len()];
            view.copy_to_f32(&mut buf).unwrap();
            assert_eq!(buf, got);
        }
        assert!(blob.tensor("unet.nope").is_none());
        let tail = &bytes[bytes.len() - 8..];
        assert_eq!(blob.checksum(), u64::from_le_bytes(tail.try_into().unwrap()));
    }
}

#[test]
fn mixed_dtypes_round_trip() {
    let cfg = small_config();
    let dtypes = [DType::F32, DType::F16, DType::BF16];
    let ts: Vec<TensorData> = reference_values(&cfg)
        .into_iter()
        .enumerate()
        .map(|(i, (s, v))| TensorData::from_f32(s.name, s.shape, &v, dtypes[i % 3]))
        .collect();
    let mut bytes = Vec::new();
    write_blob(&mut bytes, &cfg, &ts).unwrap();
    let blob = Blob::from_bytes(bytes).unwrap();
    for t in &ts {
        let view = blob.tensor(&t.name).unwrap();
        assert_eq!(view.dtype, t.dtype);
        assert_eq!(view.bytes, t.bytes.as_slice());
    }
}

#[test]
fn output_is_deterministic_regardless_of_input_order() {
    let cfg = small_config();
    let a = blob_bytes(&cfg, DType::F16);
    let mut ts = tensors(&cfg, DType::F16);
    ts.reverse();
    ts.swap(3, 17);
    let mut b = Vec::new();
    write_blob(&mut b, &cfg, &ts).unwrap();
    assert_eq!(a, b);
}

#[test]
fn bundle_table_encodes_decodes_and_stays_small() {
    // Writing the bundle would take 400+ MB; its header alone shows the table codec at scale.
    use ldm_weights::format::{decode_header, encode_header, Header, TensorEntry};
    let cfg = ModelConfig::bundle();
    cfg.validate().unwrap();
    let mut offset = 1 << 20;
    let tensors: Vec<TensorEntry> = expected_tensors(&cfg)
        .into_iter()
        .map(|s| {
            let len = s.numel() as u64 * 2;
            let e = TensorEntry {
                name: s.name,
                dtype: DType::F16,
                shape: s.shape.iter().map(|&d| d as u64).collect(),
                offset,
                len,
            };
            offset = (offset + len).div_ceil(256) * 256;
            e
        })
        .collect();
    let n = tensors.len();
    let header = Header { config: cfg, tensors };
    let bytes = encode_header(&header).unwrap();
    let (back, used) = decode_header(&bytes).unwrap();
    assert_eq!((back, used), (header, bytes.len()));
    assert!(bytes.len() < 128 << 10, "{n} tensors: header {} bytes", bytes.len());
}

#[test]
fn file_write_is_atomic_and_leaves_no_temporaries() {
    let dir = std::env::temp_dir().join(format!("ldm-weights-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.ldm");
    let cfg = small_config();
    write_blob_file(&path, &cfg, &tensors(&cfg, DType::BF16)).unwrap();
    let blob = Blob::open(&path).unwrap();
    assert_eq!(blob.config(), &cfg);
    // Overwrite in place with another dtype.
    write_blob_file(&path, &cfg, &tensors(&cfg, DType::F32)).unwrap();
    assert_eq!(Blob::open(&path).unwrap().tensors().next().unwrap().dtype, DType::F32);
    // A failing write (missing tensor) leaves the previous file untouched and no temporary.
    let mut ts = tensors(&cfg, DType::F16);
    ts.pop();
    assert!(matches!(
        write_blob_file(&path, &cfg, &ts),
        Err(BlobError::MissingTensor { .. })
    ));
    assert_eq!(Blob::open(&path).unwrap().tensors().next().unwrap().dtype, DType::F32);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("model.ldm")]);
    // Unwritable destination: typed I/O error naming the path.
    let bad = dir.join("no/such/dir/model.ldm");
    assert!(matches!(
        write_blob_file(&bad, &cfg, &tensors(&cfg, DType::F32)),
        Err(BlobError::Io { .. })
    ));
    assert!(matches!(Blob::open(dir.join("absent.ldm")), Err(BlobError::Io { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn writer_refuses_wrong_tensor_sets() {
    let cfg = small_config();
    let base = tensors(&cfg, DType::F32);
    let write = |ts: &[TensorData]| write_blob(&mut Vec::new(), &cfg, ts);

    let mut missing = base.clone();
    let gone = missing.remove(5).name;
    assert!(matches!(write(&missing), Err(BlobError::MissingTensor { name }) if name == gone));

    let mut extra = base.clone();
    extra.push(TensorData::from_f32("unet.extra.weight", vec![1], &[1.0], DType::F32));
    assert!(matches!(write(&extra), Err(BlobError::UnexpectedTensor { name }) if name == "unet.extra.weight"));

    let mut dup = base.clone();
    dup.push(base[2].clone());
    assert!(matches!(write(&dup), Err(BlobError::DuplicateTensor { name }) if name == base[2].name));

    let mut shape = base.clone();
    shape[0].shape.push(1);
    assert!(matches!(write(&shape), Err(BlobError::ShapeMismatch { .. })));

    let mut short = base.clone();
    short[1].bytes.pop();
    assert!(matches!(write(&short), Err(BlobError::DataLength { .. })));

    let mut nan = base.clone();
    let n = nan[4].view().numel();
    let mut v = vec![0.5f32; n];
    v[n - 1] = f32::NAN;
    nan[4] = TensorData::from_f32(nan[4].name.clone(), nan[4].shape.clone(), &v, DType::F32);
    assert!(matches!(write(&nan), Err(BlobError::NonFinite { index, .. }) if index == n as u64 - 1));

    // Finite in f32 but beyond f16's range: refused, naming the stored dtype.
    let mut big = base.clone();
    let n = big[6].view().numel();
    let mut v = vec![0.5f32; n];
    v[0] = 70000.0;
    big[6] = TensorData::from_f32(big[6].name.clone(), big[6].shape.clone(), &v, DType::F16);
    let e = write(&big).unwrap_err();
    assert!(
        matches!(
            e,
            BlobError::NonFinite {
                index: 0,
                dtype: DType::F16,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("as F16"), "{e}");

    let mut bad_cfg = cfg.clone();
    bad_cfg.latent_shape[1] = 5; // not divisible by 2^(2-1)
    assert!(matches!(
        write_blob(&mut Vec::new(), &bad_cfg, &base),
        Err(BlobError::InvalidConfig(ConfigError::LatentNotDivisible {
            axis: 1,
            size: 5,
            factor: 2
        }))
    ));
}

#[test]
fn config_validation_names_the_problem() {
    let ok = small_config();
    ok.validate().unwrap();
    ModelConfig::bundle().validate().unwrap();
    let check = |f: &dyn Fn(&mut ModelConfig), want: &dyn Fn(&ConfigError) -> bool| {
        let mut c = ok.clone();
        f(&mut c);
        let e = c.validate().unwrap_err();
        assert!(want(&e), "unexpected {e:?}");
    };
    check(&|c| c.unet.as_mut().unwrap().num_channels[1] = 6, &|e| {
        matches!(e, ConfigError::HeadChannelsNotDividing { .. })
    });
    check(&|c| c.decoder.as_mut().unwrap().num_channels[0] = 3, &|e| {
        matches!(e, ConfigError::GroupsNotDividing { .. })
    });
    check(&|c| c.encoder.as_mut().unwrap().num_res_blocks.push(1), &|e| {
        matches!(e, ConfigError::LevelCountMismatch { .. })
    });
    check(
        &|c| c.unet.as_mut().unwrap().attention_levels.pop().map(|_| ()).unwrap(),
        &|e| matches!(e, ConfigError::LevelCountMismatch { .. }),
    );
    check(&|c| c.unet.as_mut().unwrap().num_head_channels[1] = 0, &|e| {
        matches!(e, ConfigError::Zero { .. })
    });
    check(&|c| c.decoder.as_mut().unwrap().num_channels[1] = 1 << 20, &|e| {
        matches!(e, ConfigError::TooLarge { .. })
    });
    check(&|c| c.latent_shape[0] = 3, &|e| {
        matches!(e, ConfigError::LatentChannelsMismatch { .. })
    });
    check(&|c| c.latent_shape[3] = 0, &|e| matches!(e, ConfigError::Zero { .. }));
    check(&|c| c.scale_factor = f32::NAN, &|e| {
        matches!(e, ConfigError::BadFloat { .. })
    });
    check(&|c| c.decoder.as_mut().unwrap().norm_eps = 0.0, &|e| {
        matches!(e, ConfigError::BadFloat { .. })
    });
    check(&|c| c.scheduler.beta_end = 0.001, &|e| {
        matches!(e, ConfigError::BetaOrder { .. })
    });
    check(&|c| c.scheduler.default_steps = 5000, &|e| {
        matches!(e, ConfigError::TooManySteps { .. })
    });
    check(&|c| c.geometry.orientation = "RAR".into(), &|e| {
        matches!(e, ConfigError::BadOrientation { .. })
    });
    check(&|c| c.unet.as_mut().unwrap().num_channels = vec![], &|e| {
        matches!(e, ConfigError::NoLevels { .. })
    });
    check(
        &|c| {
            c.decoder = None;
            c.encoder = None;
            c.unet = None
        },
        &|e| matches!(e, ConfigError::NoNetwork),
    );
}
