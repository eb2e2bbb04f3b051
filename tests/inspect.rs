//! `brats-ldm inspect`: human-readable and JSON reports of converted fixture blobs, and clean
//! errors for files that are not valid blobs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_brats-ldm"))
        .args(args)
        .output()
        .expect("run brats-ldm")
}

fn stdout_ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// Both fixture networks in one f16 blob.
fn make_blob(dir: &Path) -> PathBuf {
    let fx = root().join("tests/fixtures/monai");
    let out = dir.join("both.blob");
    stdout_ok(&bin(&[
        "convert",
        "--autoencoder",
        fx.join("autoencoder/autoencoder.pt").to_str().unwrap(),
        "--unet",
        fx.join("unet/unet.pt").to_str().unwrap(),
        "--config",
        root()
            .join("tests/fixtures/configs/fixture_networks.json")
            .to_str()
            .unwrap(),
        "--dtype",
        "f16",
        "--out",
        out.to_str().unwrap(),
    ]));
    out
}

#[test]
fn human_report() {
    let dir = tempfile::tempdir().unwrap();
    let blob = make_blob(dir.path());
    let text = stdout_ok(&bin(&["inspect", blob.to_str().unwrap()]));
    for want in [
        "checksum:    verified (xxh3-64 ",
        "tensors:     422 (f16 x422)",
        "producer \"brats-ldm ",
        "date (not recorded)",
        "latent:      shape [8, 8, 8, 4], scale factor 1",
        "decoder:     channels [16, 16, 32], res blocks [2, 2, 2], latent 8, out 1, groups 8, eps 1e-6; 62 tensors, 216217 parameters",
        "encoder:     channels [16, 16, 32]",
        "64 tensors, 174776 parameters",
        "unet:        channels [16, 32, 32], attention [false, true, true], head channels [0, 16, 16]",
        "296 tensors, 1084040 parameters",
        "11616 unused parameters not stored",
        // 390993 (autoencoder, as MONAI counts it) + 1095656 (UNet with proj_attn) - 11616.
        "parameters:  1475033 in total",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
    assert!(
        !text.contains("unet.conv_in"),
        "tensor list printed without --tensors"
    );
    let listed = stdout_ok(&bin(&["inspect", blob.to_str().unwrap(), "--tensors"]));
    assert!(listed.contains("unet.conv_in.conv.weight"));
    assert!(listed.contains("f16  [16, 8, 3, 3, 3]"), "{listed}");
}

#[test]
fn json_report() {
    let dir = tempfile::tempdir().unwrap();
    let blob = make_blob(dir.path());
    let text = stdout_ok(&bin(&[
        "inspect",
        blob.to_str().unwrap(),
        "--json",
        "--tensors",
    ]));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["checksum"]["status"], "verified");
    assert_eq!(v["checksum"]["algorithm"], "xxh3-64");
    assert_eq!(
        v["file_bytes"].as_u64().unwrap(),
        std::fs::metadata(&blob).unwrap().len()
    );
    assert_eq!(v["tensor_count"], 422);
    assert_eq!(v["dtypes"]["f16"], 422);
    assert_eq!(v["networks"]["decoder"]["parameters"], 216217);
    assert_eq!(v["networks"]["encoder"]["parameters"], 174776);
    assert_eq!(v["networks"]["unet"]["parameters"], 1084040);
    assert_eq!(v["networks"]["unet"]["bytes"], 1084040 * 2);
    assert_eq!(v["parameters_total"], 1475033);
    assert_eq!(v["unused_proj_attn_parameters"], 11616);
    assert_eq!(
        v["config"]["unet"]["num_head_channels"],
        serde_json::json!([0, 16, 16])
    );
    assert_eq!(v["config"]["unet"]["attention_output_projection"], false);
    assert_eq!(
        v["config"]["decoder"]["norm_eps"].as_f64().unwrap() as f32,
        1e-6
    );
    assert_eq!(v["config"]["provenance"]["date"], "");
    assert_eq!(v["tensors"].as_array().unwrap().len(), 422);
    assert_eq!(v["tensors"][0]["offset"].as_u64().unwrap() % 256, 0);
}

#[test]
fn invalid_blobs_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let blob = make_blob(dir.path());
    let mut bytes = std::fs::read(&blob).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    let bad = dir.path().join("flipped.blob");
    std::fs::write(&bad, &bytes).unwrap();
    for path in [bad, dir.path().join("absent.blob")] {
        let o = bin(&["inspect", path.to_str().unwrap(), "--json"]);
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("is not a valid blob"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(o.stdout.is_empty());
    }
}
