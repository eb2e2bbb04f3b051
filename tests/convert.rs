//! End-to-end tests of `brats-ldm convert` on the MONAI fixture checkpoints: every source
//! (`.pt`, `.safetensors`, monai >= 1.4 `_monai.pt`) gives a blob whose tensors equal the
//! fixture's bit for bit, the three sources give byte-identical blobs, and f16/bf16 blobs hold
//! the correctly rounded values.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ldm_weights::{Blob, DType};
use safetensors::SafeTensors;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(net: &str, file: &str) -> PathBuf {
    root().join("tests/fixtures/monai").join(net).join(file)
}

fn config() -> PathBuf {
    root().join("tests/fixtures/configs/fixture_networks.json")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_brats-ldm"))
        .args(args)
        .output()
        .expect("run brats-ldm")
}

fn convert(flag: &str, src: &Path, out: &Path, extra: &[&str]) -> Output {
    let cfg = config();
    let mut a = vec![
        "convert",
        flag,
        src.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    a.extend_from_slice(extra);
    run(&a)
}

fn ok(o: &Output) -> String {
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}

/// The fixture's safetensors tensors, renamed to blob names, proj_attn excluded.
fn reference(net: &str) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(fixture(net, &format!("{net}.safetensors"))).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<_> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| !n.contains("proj_attn"))
        .map(|(n, t)| (format!("{net}.{n}"), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    v.sort();
    v
}

fn check_network(net: &str, flag: &str, expect_stored: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut blobs = Vec::new();
    for src in [
        format!("{net}.pt"),
        format!("{net}.safetensors"),
        format!("{net}_monai.pt"),
    ] {
        let out = dir.path().join(format!("{src}.blob"));
        let stdout = ok(&convert(flag, &fixture(net, &src), &out, &[]));
        assert!(
            stdout.contains(&format!("{expect_stored} stored")),
            "{stdout}"
        );
        blobs.push(std::fs::read(&out).unwrap());
    }
    assert!(
        blobs[0] == blobs[1],
        "{net}: .pt and .safetensors blobs differ"
    );
    assert!(
        blobs[0] == blobs[2],
        "{net}: .pt and _monai.pt blobs differ"
    );

    let blob = Blob::from_bytes(blobs.swap_remove(0)).unwrap();
    let reference = reference(net);
    assert_eq!(blob.tensors().len(), reference.len());
    assert_eq!(reference.len(), expect_stored);
    for (name, shape, bytes) in &reference {
        let view = blob
            .tensor(name)
            .unwrap_or_else(|| panic!("{name} missing from the blob"));
        assert_eq!(view.dtype, DType::F32);
        assert_eq!(view.shape, &shape[..], "{name}");
        assert!(
            view.bytes == &bytes[..],
            "{name}: bytes differ from the fixture"
        );
    }
}

#[test]
fn autoencoder_three_sources_identical_and_exact() {
    check_network("autoencoder", "--autoencoder", 126);
}

#[test]
fn unet_three_sources_identical_and_exact() {
    // 318 tensors in the generative checkpoint, 22 of them unused proj_attn.
    check_network("unet", "--unet", 296);
    let dir = tempfile::tempdir().unwrap();
    let stdout = ok(&convert(
        "--unet",
        &fixture("unet", "unet.pt"),
        &dir.path().join("u.blob"),
        &[],
    ));
    assert!(
        stdout.contains("dropped 22 tensors (11616 parameters)"),
        "{stdout}"
    );
    let stdout = ok(&convert(
        "--unet",
        &fixture("unet", "unet_monai.pt"),
        &dir.path().join("m.blob"),
        &[],
    ));
    assert!(
        stdout.contains("70 renamed from monai >= 1.4 names"),
        "{stdout}"
    );
}

#[test]
fn both_networks_in_one_blob_with_half_dtypes() {
    let dir = tempfile::tempdir().unwrap();
    let reference: Vec<_> = reference("autoencoder")
        .into_iter()
        .chain(reference("unet"))
        .collect();
    for (flag, dtype) in [("f16", DType::F16), ("bf16", DType::BF16)] {
        let out = dir.path().join(format!("both_{flag}.blob"));
        let o = run(&[
            "convert",
            "--autoencoder",
            fixture("autoencoder", "autoencoder_monai.pt")
                .to_str()
                .unwrap(),
            "--unet",
            fixture("unet", "unet.safetensors").to_str().unwrap(),
            "--config",
            config().to_str().unwrap(),
            "--dtype",
            flag,
            "--scale-factor",
            "0.8",
            "--latent-shape",
            "8,16,16,8",
            "--out",
            out.to_str().unwrap(),
        ]);
        ok(&o);
        let blob = Blob::open(&out).unwrap();
        assert_eq!(blob.config().scale_factor, 0.8);
        assert_eq!(blob.config().latent_shape, [8, 16, 16, 8]);
        assert!(
            blob.config().decoder.is_some()
                && blob.config().encoder.is_some()
                && blob.config().unet.is_some()
        );
        assert_eq!(blob.tensors().len(), reference.len());
        for (name, _, bytes) in &reference {
            let view = blob.tensor(name).unwrap();
            assert_eq!(view.dtype, dtype);
            let got = view.to_f32_vec();
            for (i, c) in bytes.chunks_exact(4).enumerate() {
                let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                let want = match dtype {
                    DType::F16 => half::f16::from_f32(x).to_f32(),
                    _ => half::bf16::from_f32(x).to_f32(),
                };
                assert_eq!(got[i].to_bits(), want.to_bits(), "{name}[{i}]");
            }
        }
    }
}

#[test]
fn decoder_only_drops_encoder_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dec.blob");
    let stdout = ok(&convert(
        "--autoencoder",
        &fixture("autoencoder", "autoencoder.pt"),
        &out,
        &["--decoder-only"],
    ));
    assert!(
        stdout.contains("dropped 64 tensors (174776 parameters): encoder tensors"),
        "{stdout}"
    );
    let blob = Blob::open(&out).unwrap();
    assert!(blob.config().encoder.is_none());
    assert_eq!(blob.tensors().len(), 62);
    assert!(blob
        .tensors()
        .all(|t| !t.name.starts_with("autoencoder.encoder.")));
}

#[test]
fn bundle_preset_and_config_arguments_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    // The fixture is a tiny network: against the bundle preset every tensor is mis-shaped.
    let o = run(&[
        "convert",
        "--unet",
        fixture("unet", "unet.pt").to_str().unwrap(),
        "--preset",
        "bundle",
        "--out",
        dir.path().join("x.blob").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("wrong shape unet.conv_in.conv.weight: expected [256, 8, 3, 3, 3], found [16, 8, 3, 3, 3]"), "{err}");
    assert!(!dir.path().join("x.blob").exists());

    // Neither --config nor --preset.
    let o = run(&["convert", "--unet", "u.pt", "--out", "x.blob"]);
    assert!(!o.status.success());
    // A latent shape the UNet cannot halve twice.
    let o = convert(
        "--unet",
        &fixture("unet", "unet.pt"),
        &dir.path().join("y.blob"),
        &["--latent-shape", "8,6,8,4"],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("inconsistent"), "{err}");
}

/// The one stderr line of a failed run (asserting there is exactly one).
fn one_error_line(o: &Output) -> String {
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn checkpoint_errors_are_short_and_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.blob");

    // A torch checkpoint whose byteorder member claims big-endian data: every value is read
    // byte-swapped; one line, not one per damaged tensor.
    let big = dir.path().join("big.pt");
    {
        let src = std::fs::File::open(fixture("unet", "unet.pt")).unwrap();
        let mut archive = zip::ZipArchive::new(src).unwrap();
        let mut w = zip::ZipWriter::new(std::fs::File::create(&big).unwrap());
        for i in 0..archive.len() {
            let mut entry = archive.by_index(i).unwrap();
            let name = entry.name().to_string();
            if name.ends_with("/byteorder") {
                let opts = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored);
                w.start_file(name, opts).unwrap();
                std::io::Write::write_all(&mut w, b"big").unwrap();
            } else {
                let opts = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored);
                w.start_file(name, opts).unwrap();
                std::io::copy(&mut entry, &mut w).unwrap();
            }
        }
        w.finish().unwrap();
    }
    let err = one_error_line(&convert("--unet", &big, &out, &[]));
    assert!(
        err.contains("NaN or infinite values in") && err.contains("byte order"),
        "{err}"
    );

    // --key that names nothing: a short list, and the hint that no key is needed
    let err = one_error_line(&convert(
        "--unet",
        &fixture("unet", "unet.pt"),
        &out,
        &["--key", "nope"],
    ));
    assert!(
        err.contains("and 310 more") && err.contains("drop --key"),
        "{err}"
    );
    assert!(err.len() < 600, "{err}");

    // safetensors whose offsets disagree with the shape: the tensor is named
    let bad = dir.path().join("bad.safetensors");
    let header = br#"{"conv_in.conv.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 12]);
    std::fs::write(&bad, bytes).unwrap();
    let err = one_error_line(&convert("--unet", &bad, &out, &[]));
    assert!(
        err.contains("conv_in.conv.weight") && err.contains("needs 16 bytes"),
        "{err}"
    );

    // the other network's checkpoint: the report is capped, not one line per tensor
    let o = convert("--autoencoder", &fixture("unet", "unet.pt"), &out, &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.lines().count() < 40 && err.contains("more unexpected"),
        "{err}"
    );
    assert!(!out.exists());
}
