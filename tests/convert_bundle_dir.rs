//! `brats-ldm convert --bundle DIR` on a MONAI bundle directory laid out as the model zoo ships
//! it (tests/fixtures/bundle/tiny, made by make_bundle.py beside it): one command converts it,
//! the blob's pipeline (the config's DDIM steps from its noise, then decode) matches MONAI's run
//! of the same config, `--config configs/inference.json` gives the same blob, and what the
//! converter cannot honour is refused by name with nothing written.

mod generate_support;

use std::path::{Path, PathBuf};

use generate_support::{assert_one_line_error, run, stderr};
use ldm_test_support::{fixtures_dir, read_npy, rel_l2};
use serde_json::{json, Value};

fn tiny() -> PathBuf {
    fixtures_dir().join("bundle/tiny")
}

fn convert(args: &[&str], out: &Path) -> std::process::Output {
    let mut a = vec!["convert"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--out", out.to_str().unwrap()]);
    run(&a)
}

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "failed: {}", stderr(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_bundle_directory_converts_in_one_command_and_samples_as_monai() {
    let tmp = tempfile::tempdir().unwrap();
    let blob = tmp.path().join("x.blob");
    let dir = tiny();
    let stdout = ok(&convert(&["--bundle", dir.to_str().unwrap()], &blob));
    for line in [
        "ignored `network_def#use_flash_attention`: it does not change the numbers",
        "ignored `autoencoder_def#use_checkpointing`",
        "20 inference steps from `set_timesteps`",
        "LDMSampler decodes without dividing by a scale factor",
        "models/model_autoencoder.pt (named by `load_autoencoder_path`",
        "models/model.pt (named by `load_diffusion_path`",
    ] {
        assert!(stdout.contains(line), "`{line}` missing from:\n{stdout}");
    }

    // The bundle's inference: noise -> the config's 20 DDIM steps -> decode, no scale factor.
    let out = tmp.path().join("out");
    let noise = dir.join("expected/noise.npy");
    let o = run(&[
        "generate",
        "--model",
        blob.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--init-noise",
        noise.to_str().unwrap(),
        "--format",
        "npy",
        "--threads",
        "2",
    ]);
    assert!(o.status.success(), "generate failed: {}", stderr(&o));
    let (shape, ours) = read_npy(&out.join("init-noise.npy"));
    let (ref_shape, reference) = read_npy(&dir.join("expected/image.npy"));
    assert_eq!(shape, ref_shape[1..].to_vec());
    let err = rel_l2(&ours, &reference);
    eprintln!("convert --bundle + generate --init-noise vs MONAI: relative L2 {err:.3e}");
    assert!(err < 1e-4, "relative L2 {err}");
    let manifest = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap();
    let line: Value = serde_json::from_str(manifest.lines().next().unwrap()).unwrap();
    assert_eq!(line["steps"], 20);

    // The same config file through --config, checkpoints named on the command line: same bytes.
    let again = tmp.path().join("again.blob");
    ok(&convert(
        &[
            "--config",
            dir.join("configs/inference.json").to_str().unwrap(),
            "--autoencoder",
            dir.join("models/model_autoencoder.pt").to_str().unwrap(),
            "--unet",
            dir.join("models/model.pt").to_str().unwrap(),
        ],
        &again,
    ));
    assert_eq!(
        std::fs::read(&blob).unwrap(),
        std::fs::read(&again).unwrap()
    );

    // A relative DIR from another working directory: the paths the config builds from
    // `bundle_root` still land in the bundle.
    let relative = tmp.path().join("relative.blob");
    let o = generate_support::bin()
        .current_dir(fixtures_dir())
        .args(["convert", "--bundle", "bundle/tiny", "--out"])
        .arg(&relative)
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(
        std::fs::read(&blob).unwrap(),
        std::fs::read(&relative).unwrap()
    );
}

/// A change to a bundle's inference.json.
type Edit = Box<dyn FnOnce(&mut Value)>;

/// A copy of the tiny bundle whose inference.json is `edit`ed; models are hard links or copies.
fn edited_bundle(root: &Path, name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("configs")).unwrap();
    std::fs::create_dir_all(dir.join("models")).unwrap();
    for m in ["model.pt", "model_autoencoder.pt"] {
        let (from, to) = (tiny().join("models").join(m), dir.join("models").join(m));
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).unwrap();
        }
    }
    let text = std::fs::read_to_string(tiny().join("configs/inference.json")).unwrap();
    let mut cfg: Value = serde_json::from_str(&text).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.join("configs/inference.json"), cfg.to_string()).unwrap();
    dir
}

#[test]
fn what_the_converter_cannot_honour_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.blob");
    let cases: Vec<(&str, Edit, Vec<&str>)> = vec![
        (
            "cycle",
            Box::new(|c| c["latent_channels"] = json!("@network_def#in_channels")),
            vec![
                "circular reference: latent_channels -> network_def#in_channels -> latent_channels",
            ],
        ),
        (
            "expression",
            Box::new(|c| c["network_def"]["num_res_blocks"] = json!("$torch.randint(1, 3, (1,))")),
            vec![
                "`network_def#num_res_blocks`",
                "cannot be evaluated",
                "torch.randint(...)",
            ],
        ),
        (
            "option",
            Box::new(|c| c["network_def"]["resblock_updown"] = json!(true)),
            vec!["network_def", "resblock_updown is not supported"],
        ),
        (
            "unknown",
            Box::new(|c| c["autoencoder_def"]["num_splits"] = json!(4)),
            vec!["unknown field `num_splits`"],
        ),
        (
            "target",
            Box::new(|c| {
                c["autoencoder_def"]["_target_"] = json!("generative.networks.nets.VQVAE")
            }),
            vec![
                "`autoencoder_def`",
                "`generative.networks.nets.VQVAE` is not supported",
            ],
        ),
        (
            "steps",
            Box::new(|c| {
                c["set_timesteps"] =
                    json!("$@noise_scheduler.set_timesteps(num_inference_steps=torch.tensor(5))")
            }),
            vec![
                "`set_timesteps`",
                "the number of steps",
                "torch.tensor(...)",
            ],
        ),
        (
            "scale",
            Box::new(|c| {
                c["inferer"] = json!({
                    "_target_": "generative.inferers.LatentDiffusionInferer",
                    "scheduler": "@noise_scheduler",
                    "scale_factor": "$scripts.utils.compute_scale_factor(@autoencoder, @device)"
                })
            }),
            vec!["`inferer#scale_factor`", "--scale-factor"],
        ),
        (
            "checkpoint",
            Box::new(|c| c["load_diffusion_path"] = json!("$@bundle_root + '/models/unet.pt'")),
            vec![
                "UNet checkpoint",
                "models/unet.pt",
                "load_diffusion_path",
                "--unet",
            ],
        ),
    ];
    for (name, edit, needles) in cases {
        let dir = edited_bundle(tmp.path(), name, edit);
        let o = convert(&["--bundle", dir.to_str().unwrap()], &out);
        assert_one_line_error(&o, &needles);
        assert!(!out.exists(), "{name}: an output was written");
    }

    // Given on the command line, the scale factor the config cannot compute is not needed.
    let dir = tmp.path().join("scale");
    let o = convert(
        &["--bundle", dir.to_str().unwrap(), "--scale-factor", "0.5"],
        &out,
    );
    ok(&o);
    let blob = ldm_weights::Blob::open(&out).unwrap();
    assert_eq!(blob.config().scale_factor, 0.5);
}

#[test]
fn a_directory_that_is_not_a_bundle_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.blob");
    let o = convert(&["--bundle", tmp.path().to_str().unwrap()], &out);
    assert_one_line_error(&o, &["cannot list", "configs"]);
    let o = convert(
        &["--bundle", tmp.path().join("nope").to_str().unwrap()],
        &out,
    );
    assert_one_line_error(&o, &["is not a directory"]);
    let o = convert(
        &["--bundle", tiny().to_str().unwrap(), "--preset", "bundle"],
        &out,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
}
