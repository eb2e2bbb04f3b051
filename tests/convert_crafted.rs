//! Hostile and broken checkpoints: crafted pickles that would run code are refused naming the
//! global, broken archives give a clear error, and no blob is ever written. Also: every missing,
//! extra or mis-shaped tensor is reported by name in one error. The crafted files are made by
//! `tests/fixtures/crafted/make_crafted.py` (Python stdlib only).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn convert_unet(src: &std::path::Path, out: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_brats-ldm"))
        .args(["convert", "--unet"])
        .arg(src)
        .arg("--config")
        .arg(root().join("tests/fixtures/configs/fixture_networks.json"))
        .arg("--out")
        .arg(out)
        .output()
        .expect("run brats-ldm")
}

fn refused(file: &str, expect: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.blob");
    let o = convert_unet(&root().join("tests/fixtures/crafted").join(file), &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{file} was accepted");
    assert_eq!(
        o.status.code(),
        Some(1),
        "{file}: not a clean error exit: {err}"
    );
    assert!(!err.contains("panicked"), "{file}: {err}");
    for e in expect {
        assert!(
            err.contains(e),
            "{file}: error does not mention `{e}`:\n{err}"
        );
    }
    assert!(!out.exists(), "{file}: a blob was written");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "{file}: temporary files left behind"
    );
}

#[test]
fn code_execution_globals_are_refused_by_name() {
    refused(
        "os_system.pt",
        &["global `os.system` is not allowed", "nothing was executed"],
    );
    refused(
        "builtins_eval.pt",
        &["global `builtins.eval` is not allowed"],
    );
    refused(
        "stack_global_posix.pt",
        &["global `posix.system` is not allowed"],
    );
    refused(
        "subprocess_popen.pt",
        &["global `subprocess.Popen` is not allowed"],
    );
}

#[test]
fn broken_archives_are_refused_clearly() {
    refused(
        "huge_numel.pt",
        &[
            "tensor `w`",
            "claims 1099511627776 float32 elements",
            "holds 16 bytes",
        ],
    );
    refused(
        "view_out_of_bounds.pt",
        &["tensor `w`", "reaches element 5", "has 4 elements"],
    );
    refused(
        "missing_storage.pt",
        &["storage `7` is missing", "archive/data/7"],
    );
    refused("truncated_pickle.pt", &["pickle truncated"]);
    refused(
        "nested.pt",
        &["not a state dict", "'state_dict' (dict)", "--key"],
    );
}

#[test]
fn non_checkpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pt");
    std::fs::write(&junk, b"this is not a checkpoint").unwrap();
    let o = convert_unet(&junk, &dir.path().join("x.blob"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("neither a torch.save zip archive nor a safetensors file"),
        "{err}"
    );
    // A safetensors header that points past the end of the file.
    let bad = dir.path().join("bad.safetensors");
    let header = br#"{"w":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 16]);
    std::fs::write(&bad, bytes).unwrap();
    let o = convert_unet(&bad, &dir.path().join("x.blob"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("invalid safetensors file"), "{err}");
    let o = convert_unet(&dir.path().join("absent.pt"), &dir.path().join("x.blob"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read"));
}

#[test]
fn every_mismatch_is_reported_by_name_at_once() {
    let bytes = std::fs::read(root().join("tests/fixtures/monai/unet/unet.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: HashMap<String, (Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, (t.shape().to_vec(), t.data().to_vec())))
        .collect();
    // Missing: two tensors. Extra: one. Mis-shaped: one (same element count, other shape).
    owned.remove("time_embed.0.weight").unwrap();
    owned.remove("middle_block.attention.to_k.bias").unwrap();
    owned.insert("bogus.layer.weight".into(), (vec![2], vec![0u8; 8]));
    let (_, data) = owned.remove("out.2.conv.bias").unwrap();
    owned.insert("out.2.conv.bias".into(), (vec![2, 4], data));
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, (s, d))| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("broken.safetensors");
    safetensors::serialize_to_file(views, None, &src).unwrap();

    let out = dir.path().join("x.blob");
    let o = convert_unet(&src, &out);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    for want in [
        "missing     unet.time_embed.0.weight [64, 16]",
        "missing     unet.middle_block.attention.to_k.bias [32]",
        "unexpected  unet.bogus.layer.weight [2]",
        "wrong shape unet.out.2.conv.bias: expected [8], found [2, 4]",
        "(2 missing, 1 unexpected, 1 wrong shape)",
    ] {
        assert!(err.contains(want), "missing `{want}` in:\n{err}");
    }
    assert!(!out.exists());
}

/// The fixture UNet renamed to monai >= 1.4 style *with* the output projection
/// (`attn.to_q`, ..., `attn.out_proj`), as monai writes it when include_fc=True.
fn monai_with_out_proj(dir: &std::path::Path) -> PathBuf {
    let bytes = std::fs::read(root().join("tests/fixtures/monai/unet/unet.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let owned: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            let n = n
                .replace(".to_q.", ".attn.to_q.")
                .replace(".to_k.", ".attn.to_k.")
                .replace(".to_v.", ".attn.to_v.")
                .replace(".proj_attn.", ".attn.out_proj.");
            (n, t.shape().to_vec(), t.data().to_vec())
        })
        .collect();
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    let src = dir.join("monai_fc.safetensors");
    safetensors::serialize_to_file(views, None, &src).unwrap();
    src
}

#[test]
fn applied_monai_out_proj_needs_the_config_switch() {
    let dir = tempfile::tempdir().unwrap();
    let src = monai_with_out_proj(dir.path());
    // Against the fixture config (projection not applied): refused, not silently dropped.
    let o = convert_unet(&src, &dir.path().join("x.blob"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "out_proj    middle_block.attention.attn.out_proj.weight: monai >= 1.4 applies"
        ),
        "{err}"
    );
    assert!(
        err.contains("\"attention_output_projection\": true"),
        "{err}"
    );

    // With include_fc: true the projection is stored under the generative name.
    let cfg_text =
        std::fs::read_to_string(root().join("tests/fixtures/configs/fixture_networks.json"))
            .unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&cfg_text).unwrap();
    cfg["network_def"]["include_fc"] = serde_json::Value::Bool(true);
    let cfg_path = dir.path().join("fc.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let out = dir.path().join("fc.blob");
    let o = Command::new(env!("CARGO_BIN_EXE_brats-ldm"))
        .args(["convert", "--unet"])
        .arg(&src)
        .arg("--config")
        .arg(&cfg_path)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let blob = ldm_weights::Blob::open(&out).unwrap();
    assert!(
        blob.config()
            .unet
            .as_ref()
            .unwrap()
            .attention_output_projection
    );
    assert_eq!(blob.tensors().len(), 318);
    let bytes = std::fs::read(root().join("tests/fixtures/monai/unet/unet.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let want = st
        .tensor("up_blocks.1.attentions.2.proj_attn.weight")
        .unwrap();
    assert!(
        blob.tensor("unet.up_blocks.1.attentions.2.proj_attn.weight")
            .unwrap()
            .bytes
            == want.data()
    );

    // The flag does the same with the unchanged fixture config.
    let flagged = dir.path().join("flag.blob");
    let o = Command::new(env!("CARGO_BIN_EXE_brats-ldm"))
        .args(["convert", "--attention-output-projection", "--unet"])
        .arg(&src)
        .arg("--config")
        .arg(root().join("tests/fixtures/configs/fixture_networks.json"))
        .arg("--out")
        .arg(&flagged)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&flagged).unwrap() == std::fs::read(&out).unwrap());
}

#[test]
fn f16_overflow_is_named() {
    let bytes = std::fs::read(root().join("tests/fixtures/monai/unet/unet.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.shape().to_vec(), t.data().to_vec()))
        .collect();
    let big = owned
        .iter_mut()
        .find(|(n, _, _)| n == "out.2.conv.bias")
        .unwrap();
    big.2[4..8].copy_from_slice(&65520.0f32.to_le_bytes());
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.safetensors");
    safetensors::serialize_to_file(views, None, &src).unwrap();
    let cfg = root().join("tests/fixtures/configs/fixture_networks.json");
    for (dtype, ok) in [("f16", false), ("bf16", true)] {
        let out = dir.path().join(format!("{dtype}.blob"));
        let o = Command::new(env!("CARGO_BIN_EXE_brats-ldm"))
            .args(["convert", "--dtype", dtype, "--unet"])
            .arg(&src)
            .arg("--config")
            .arg(&cfg)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.success(), ok, "{dtype}: {err}");
        if !ok {
            assert!(
                err.contains("tensor unet.out.2.conv.bias holds 65520, beyond the f16 range"),
                "{err}"
            );
            assert!(!out.exists());
        }
    }
}
