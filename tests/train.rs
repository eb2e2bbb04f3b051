//! `brats-ldm train` / `export` end to end on tiny phantoms: the loss goes down, a run killed
//! after a checkpoint resumes to exactly the weights of an uninterrupted run, the exported blob
//! loads in the runtime and generates, the shipped presets equal configs/*.json, and bad inputs
//! fail with clear messages. Each test takes a few seconds.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ldm_trainer::data::phantom::{write_phantom_dataset, PhantomOptions};
use ldm_trainer::train::diffusion::DiffusionTrainer;
use ldm_trainer::train::run::read_log;
use ldm_trainer::train::setup::TrainConfig;
use ldm_trainer::train::vae_gan::VaeGanTrainer;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_brats-ldm"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("spawn brats-ldm")
}

fn ok(args: &[&str]) -> Output {
    let o = run(args);
    assert!(o.status.success(), "brats-ldm {args:?} failed:\n{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    o
}

fn fails(args: &[&str]) -> String {
    let o = run(args);
    assert!(!o.status.success(), "brats-ldm {args:?} should have failed");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A tiny configuration: 8 mm voxels, 16x16x12 volumes, 8/16-channel networks.
fn tiny_config() -> TrainConfig {
    let mut c = TrainConfig::cpu_small();
    c.data.spacing_mm = [8.0; 3];
    c.data.roi = [16, 16, 12];
    let ae = &mut c.autoencoder;
    ae.patch = [16, 16, 12];
    ae.trainer.encoder.num_channels = vec![8, 16];
    ae.trainer.decoder.num_channels = vec![8, 16];
    ae.trainer.encoder.num_res_blocks = vec![1, 1];
    ae.trainer.decoder.num_res_blocks = vec![1, 1];
    ae.trainer.encoder.latent_channels = 2;
    ae.trainer.decoder.latent_channels = 2;
    ae.trainer.encoder.norm_num_groups = 4;
    ae.trainer.decoder.norm_num_groups = 4;
    ae.trainer.discriminator.num_channels = 4;
    ae.trainer.adv_start_step = 6;
    ae.trainer.adam_g.lr = 1e-3;
    ae.trainer.lr_g.base = 1e-3;
    ae.trainer.lr_g.milestones = vec![];
    ae.batch_size = 2;
    ae.steps = 12;
    ae.checkpoint_every = 3;
    let d = &mut c.diffusion;
    d.unet.in_channels = 2;
    d.unet.out_channels = 2;
    d.unet.num_channels = vec![8, 16];
    d.unet.num_head_channels = vec![0, 8];
    d.unet.norm_num_groups = 4;
    d.adam.lr = 2e-3;
    d.lr.base = 2e-3;
    d.lr.milestones = vec![];
    d.steps = 12;
    d.checkpoint_every = 4;
    d.scheduler.default_sampler = ldm_weights::SamplerKind::Ddim;
    d.scheduler.default_steps = 4;
    d.sample_latents = true;
    c
}

struct Setup {
    dir: tempfile::TempDir,
    data: PathBuf,
    config: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("phantoms");
        let opt = PhantomOptions { dims: [24, 24, 16], spacing: 8.0, lesion: true };
        write_phantom_dataset(&data, 4, 7, &opt, false, |_, _| {}).unwrap();
        let config = dir.path().join("tiny.json");
        std::fs::write(&config, serde_json::to_string_pretty(&tiny_config()).unwrap()).unwrap();
        Setup { dir, data, config }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn train(&self, stage: &str, out: &Path, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = vec!["train".into(), stage.into(), "--data".into(), s(&self.data), "--out".into(), s(out)];
        v.extend(["--cache".into(), s(&self.path("cache"))]);
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    }
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(|x| x.as_str()).collect()
}

fn losses(run_dir: &Path, field: &str) -> Vec<f64> {
    read_log(&run_dir.join("log.jsonl")).unwrap().iter().map(|v| v[field].as_f64().unwrap()).collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn train_lowers_loss_resumes_exactly_and_exports() {
    let st = Setup::new();
    let cfg = s(&st.config);
    // Uninterrupted autoencoder run.
    let a = st.path("ae_a");
    ok(&args(&st.train("autoencoder", &a, &["--config", &cfg])));
    let l1 = losses(&a, "l1");
    assert_eq!(l1.len(), 12);
    assert!(mean(&l1[9..]) < 0.7 * mean(&l1[..3]), "L1 did not go down: {l1:?}");
    let log = read_log(&a.join("log.jsonl")).unwrap();
    assert!(log[5]["disc"].is_null() && log[6]["disc"].is_number() && log[6]["gen_adv"].is_number(), "adversarial terms start at step 6");
    assert!(a.join("loss.png").is_file());

    // The same run, killed after a checkpoint and resumed.
    let b = st.path("ae_b");
    let mut child =
        bin().args(args(&st.train("autoencoder", &b, &["--config", &cfg]))).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let t0 = Instant::now();
    while !(b.join("checkpoint.ckpt").is_file()) && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (killed, _) = VaeGanTrainer::resume(&b.join("checkpoint.ckpt")).unwrap();
    assert!(killed.step >= 3 && killed.step < 12, "the run was not interrupted (step {})", killed.step);
    ok(&args(&st.train("autoencoder", &b, &["--resume"])));
    let (ta, _) = VaeGanTrainer::resume(&a.join("checkpoint.ckpt")).unwrap();
    let (tb, _) = VaeGanTrainer::resume(&b.join("checkpoint.ckpt")).unwrap();
    assert_eq!(ta.step, 12);
    assert_eq!(tb.step, 12);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(bits(&ta.ae_params.data) == bits(&tb.ae_params.data), "resumed autoencoder differs");
    assert!(bits(&ta.disc_params.data) == bits(&tb.disc_params.data), "resumed discriminator differs");
    assert!(bits(&ta.opt_g.v) == bits(&tb.opt_g.v));
    assert_eq!(losses(&a, "loss_g"), losses(&b, "loss_g"), "the resumed log differs");

    // Diffusion: 12 steps straight vs 5 + resume to 12.
    let da = st.path("df_a");
    ok(&args(&st.train("diffusion", &da, &["--config", &cfg, "--autoencoder", &s(&a)])));
    let l = losses(&da, "loss");
    assert!(l.iter().all(|v| v.is_finite()));
    assert!(mean(&l[9..]) < mean(&l[..3]), "diffusion loss did not go down: {l:?}");
    let db = st.path("df_b");
    ok(&args(&st.train("diffusion", &db, &["--config", &cfg, "--autoencoder", &s(&a), "--steps", "5"])));
    ok(&args(&st.train("diffusion", &db, &["--resume", "--autoencoder", &s(&a)])));
    let (xa, _) = DiffusionTrainer::resume(&da.join("checkpoint.ckpt")).unwrap();
    let (xb, _) = DiffusionTrainer::resume(&db.join("checkpoint.ckpt")).unwrap();
    assert!(xa.config.scale_factor.is_finite() && xa.config.scale_factor > 0.0);
    assert!(bits(&xa.params.data) == bits(&xb.params.data), "resumed UNet differs");
    assert_eq!(l, losses(&db, "loss"));

    // A diffusion run must be resumed with the autoencoder its latents came from.
    let c = st.path("ae_c");
    ok(&args(&st.train("autoencoder", &c, &["--config", &cfg, "--steps", "2"])));
    let err = fails(&args(&st.train("diffusion", &db, &["--resume", "--autoencoder", &s(&c), "--steps", "13"])));
    assert!(err.contains("another autoencoder"), "{err}");

    // Export, inspect, generate.
    let blob = st.path("model.blob");
    ok(&["export", "--autoencoder", &s(&a), "--diffusion", &s(&da), "--out", &s(&blob), "--dtype", "f16"]);
    let model = ldm_weights::Blob::open(&blob).unwrap();
    let mc = model.config();
    assert_eq!(mc.latent_shape, [2, 8, 8, 6]);
    assert_eq!(mc.geometry.spacing_mm, [8.0; 3]);
    assert_eq!(mc.scale_factor, xa.config.scale_factor);
    assert_eq!(mc.provenance.steps, 24);
    assert!(mc.provenance.producer.starts_with("brats-ldm "), "{}", mc.provenance.producer);
    assert!(mc.encoder.is_none());
    let out = st.path("gen");
    ok(&["generate", "--model", &s(&blob), "--out", &s(&out), "--format", "npy", "--threads", "2"]);
    let files: Vec<_> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "npy")).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let bytes = std::fs::read(&files[0]).unwrap();
    let vals: Vec<f32> =
        bytes[bytes.len() - 16 * 16 * 12 * 4..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert!(vals.iter().all(|v| v.is_finite()));
    assert!(vals.iter().any(|&v| v != vals[0]));

    // The sampling defaults can be overridden at export; DDPM always takes every timestep.
    let b2 = st.path("ddpm.blob");
    ok(&["export", "--autoencoder", &s(&a), "--diffusion", &s(&da), "--out", &s(&b2), "--sampler", "ddpm", "--clip-sample", "false"]);
    let sc = ldm_weights::Blob::open(&b2).unwrap().config().scheduler.clone();
    assert_eq!((sc.default_sampler, sc.default_steps, sc.ddpm.clip_sample), (ldm_weights::SamplerKind::Ddpm, 1000, false));
    let b3 = st.path("ddim.blob");
    ok(&["export", "--autoencoder", &s(&a), "--diffusion", &s(&da), "--out", &s(&b3), "--steps", "7"]);
    let sc = ldm_weights::Blob::open(&b3).unwrap().config().scheduler.clone();
    assert_eq!((sc.default_sampler, sc.default_steps, sc.ddim.clip_sample), (ldm_weights::SamplerKind::Ddim, 7, mc.scheduler.ddim.clip_sample));
    let (sa, sd, sy) = (s(&a), s(&da), s(&st.path("y.blob")));
    for (bad, what) in [(["--sampler", "ddpm", "--steps", "50"], "DDPM runs all 1000"), (["--sampler", "ddim", "--steps", "0"], "DDIM takes 1 to 1000")] {
        let mut v = vec!["export", "--autoencoder", &sa, "--diffusion", &sd, "--out", &sy];
        v.extend(bad);
        let e = fails(&v);
        assert!(e.contains(what), "{e}");
        assert!(!st.path("y.blob").exists());
    }

    // Exporting with an autoencoder the diffusion run did not use is refused.
    let err = fails(&["export", "--autoencoder", &s(&c), "--diffusion", &s(&da), "--out", &s(&st.path("x.blob"))]);
    assert!(err.contains("another autoencoder"), "{err}");
    assert!(!st.path("x.blob").exists());
}

#[test]
fn presets_match_the_shipped_config_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    for (name, preset) in [("bundle", TrainConfig::bundle()), ("cpu-small", TrainConfig::cpu_small())] {
        let p = root.join(format!("{name}.json"));
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(TrainConfig::from_json(&text, name).unwrap(), preset, "{} differs from the preset", p.display());
        preset.validate().unwrap();
    }
}

#[test]
fn bad_inputs_fail_with_clear_errors() {
    let st = Setup::new();
    let cfg = s(&st.config);
    let out = st.path("run");
    let missing = st.path("no-such-data");
    let e = fails(&["train", "autoencoder", "--data", &s(&missing), "--config", &cfg, "--out", &s(&out)]);
    assert!(e.contains("no-such-data") && e.contains("no such file"), "{e}");
    let e = fails(&["train", "autoencoder", "--data", &s(&st.data), "--out", &s(&out)]);
    assert!(e.contains("--config") && e.contains("--preset"), "{e}");
    let e = fails(&["train", "autoencoder", "--data", &s(&st.data), "--preset", "huge", "--out", &s(&out)]);
    assert!(e.contains("unknown preset `huge`"), "{e}");

    let bad = st.path("bad.json");
    std::fs::write(&bad, "{ \"data\": ").unwrap();
    let e = fails(&["train", "autoencoder", "--data", &s(&st.data), "--config", &s(&bad), "--out", &s(&out)]);
    assert!(e.contains("bad.json") && e.contains("not a training configuration"), "{e}");
    let mut v = serde_json::to_value(tiny_config()).unwrap();
    v["autoencoder"]["patch"] = serde_json::json!([15, 16, 12]);
    std::fs::write(&bad, v.to_string()).unwrap();
    let e = fails(&["train", "autoencoder", "--data", &s(&st.data), "--config", &s(&bad), "--out", &s(&out)]);
    assert!(e.contains("autoencoder.patch") && e.contains("divisible by 2"), "{e}");
    let mut v = serde_json::to_value(tiny_config()).unwrap();
    v["diffusion"]["unet"]["in_channels"] = serde_json::json!(3);
    std::fs::write(&bad, v.to_string()).unwrap();
    let e = fails(&["train", "autoencoder", "--data", &s(&st.data), "--config", &s(&bad), "--out", &s(&out)]);
    assert!(e.contains("latents have 2"), "{e}");
    let mut v = serde_json::to_value(tiny_config()).unwrap();
    v["autoencoder"]["stepz"] = serde_json::json!(3);
    std::fs::write(&bad, v.to_string()).unwrap();
    let e = fails(&["train", "autoencoder", "--data", &s(&st.data), "--config", &s(&bad), "--out", &s(&out)]);
    assert!(e.contains("stepz"), "{e}");

    let e = fails(&args(&st.train("autoencoder", &out, &["--resume"])));
    assert!(e.contains("--config") || e.contains("no checkpoint"), "{e}");
    let e = fails(&args(&st.train("autoencoder", &out, &["--config", &cfg, "--resume"])));
    assert!(e.contains("holds no checkpoint"), "{e}");
    let e = fails(&args(&st.train("diffusion", &out, &["--config", &cfg])));
    assert!(e.contains("--autoencoder"), "{e}");
    let e = fails(&args(&st.train("diffusion", &out, &["--config", &cfg, "--autoencoder", &s(&st.path("nothing"))])));
    assert!(e.contains("no autoencoder checkpoint"), "{e}");

    ok(&args(&st.train("autoencoder", &out, &["--config", &cfg, "--steps", "1"])));
    let e = fails(&args(&st.train("autoencoder", &out, &["--config", &cfg, "--steps", "2"])));
    assert!(e.contains("already holds") && e.contains("--resume"), "{e}");
    let e = fails(&["export", "--autoencoder", &s(&out), "--diffusion", &s(&out), "--out", &s(&st.path("m.blob"))]);
    assert!(e.contains("not a diffusion checkpoint"), "{e}");
    std::fs::write(out.join("checkpoint.ckpt"), b"LDMCKPT1 truncated").unwrap();
    let e = fails(&args(&st.train("autoencoder", &out, &["--resume", "--steps", "2"])));
    assert!(e.contains("checkpoint"), "{e}");
}
