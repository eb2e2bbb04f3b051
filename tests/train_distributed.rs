//! `brats-ldm train --nproc-per-node 2` end to end on tiny phantoms: two CPU processes with a
//! batch of 1 each reach the weights of one process with a batch of 2 (1e-5 relative) for both
//! stages, only rank 0 writes the run folder (one log line per step, the world size in the
//! checkpoint), a run resumes with another world size, and launch-environment mistakes fail
//! clearly and in bounded time.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ldm_trainer::checkpoint;
use ldm_trainer::data::phantom::{write_phantom_dataset, PhantomOptions};
use ldm_trainer::train::run::read_log;
use ldm_trainer::train::setup::TrainConfig;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_brats-ldm"));
    for v in [
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "SLURM_PROCID",
        "SLURM_NTASKS",
    ] {
        c.env_remove(v);
    }
    c
}

fn ok(c: &mut Command) -> Output {
    let o = c.output().expect("spawn brats-ldm");
    assert!(
        o.status.success(),
        "{c:?} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// 16x16x12 volumes, 8/16-channel networks, adversarial terms from step 2, `batch` per process.
fn config(batch: usize) -> TrainConfig {
    let mut c = TrainConfig::cpu_small();
    c.data.spacing_mm = [8.0; 3];
    c.data.roi = [16, 16, 12];
    let ae = &mut c.autoencoder;
    ae.patch = [16, 16, 12];
    for n in [
        &mut ae.trainer.encoder.num_channels,
        &mut ae.trainer.decoder.num_channels,
    ] {
        *n = vec![8, 16];
    }
    ae.trainer.encoder.num_res_blocks = vec![1, 1];
    ae.trainer.decoder.num_res_blocks = vec![1, 1];
    ae.trainer.encoder.latent_channels = 2;
    ae.trainer.decoder.latent_channels = 2;
    ae.trainer.encoder.norm_num_groups = 4;
    ae.trainer.decoder.norm_num_groups = 4;
    ae.trainer.discriminator.num_channels = 4;
    ae.trainer.adv_start_step = 2;
    ae.batch_size = batch;
    ae.steps = 4;
    ae.checkpoint_every = 2;
    let d = &mut c.diffusion;
    d.unet.in_channels = 2;
    d.unet.out_channels = 2;
    d.unet.num_channels = vec![8, 16];
    d.unet.num_head_channels = vec![0, 8];
    d.unet.norm_num_groups = 4;
    d.sample_latents = true;
    d.batch_size = batch;
    d.steps = 4;
    d.checkpoint_every = 2;
    // Validation at each checkpoint: rank 0 alone computes and logs it.
    c.validation.holdout = 1;
    c.validation.diversity_samples = 2;
    c.validation.diversity_steps = 2;
    c
}

struct Setup {
    dir: tempfile::TempDir,
    data: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("phantoms");
        let opt = PhantomOptions {
            dims: [24, 24, 16],
            spacing: 8.0,
            lesion: true,
        };
        write_phantom_dataset(&data, 3, 5, &opt, false, |_, _| {}).unwrap();
        for b in [1, 2] {
            std::fs::write(
                dir.path().join(format!("b{b}.json")),
                serde_json::to_string(&config(b)).unwrap(),
            )
            .unwrap();
        }
        Setup { dir, data }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `train STAGE` into `out` with the batch-`batch` configuration and `extra` options.
    fn train(&self, stage: &str, out: &Path, batch: usize, extra: &[&str]) -> Command {
        let mut c = bin();
        c.args(["train", stage, "--data"])
            .arg(&self.data)
            .arg("--out")
            .arg(out)
            .arg("--cache")
            .arg(self.path("cache"));
        c.arg("--config")
            .arg(self.path(&format!("b{batch}.json")))
            .args(extra);
        c
    }
}

/// The checkpoint's sections and its loop record.
fn ckpt(run: &Path) -> (Vec<Vec<f32>>, serde_json::Value, u64) {
    let (h, secs) = checkpoint::load(&run.join("checkpoint.ckpt")).unwrap();
    (secs, h.extra, h.step)
}

fn rel(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// Two ranks of batch 1 against one process of batch 2: same weights, one log line per step.
fn assert_same_run(two: &Path, one: &Path, sections: usize) {
    let (a, extra_a, step_a) = ckpt(two);
    let (b, extra_b, step_b) = ckpt(one);
    assert_eq!((step_a, step_b), (4, 4));
    assert_eq!(
        (
            extra_a["world_size"].as_u64(),
            extra_b["world_size"].as_u64()
        ),
        (Some(2), Some(1))
    );
    for (i, (x, y)) in a.iter().zip(&b).take(sections).enumerate() {
        let e = rel(x, y);
        println!("{}: section {i}: relative L2 {e:e}", two.display());
        assert!(
            e <= 1e-5,
            "section {i} of {} differs by {e:e}",
            two.display()
        );
    }
    let (la, lb) = (
        read_log(&two.join("log.jsonl")).unwrap(),
        read_log(&one.join("log.jsonl")).unwrap(),
    );
    let validation = |log: &[serde_json::Value]| -> Vec<u64> {
        log.iter()
            .filter(|l| l["validation"] == true)
            .map(|l| l["step"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(
        (validation(&la), validation(&lb)),
        (vec![1, 3], vec![1, 3]),
        "one validation line per checkpoint, written once"
    );
    let (la, lb): (Vec<_>, Vec<_>) = (
        la.into_iter().filter(|l| l["validation"] != true).collect(),
        lb.into_iter().filter(|l| l["validation"] != true).collect(),
    );
    assert_eq!(
        la.iter()
            .map(|l| l["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![0, 1, 2, 3],
        "rank 0 alone writes the log"
    );
    let field = if la[0].get("loss_g").is_some() {
        "loss_g"
    } else {
        "loss"
    };
    for (x, y) in la.iter().zip(&lb) {
        let (x, y) = (x[field].as_f64().unwrap(), y[field].as_f64().unwrap());
        assert!(
            (x - y).abs() <= 1e-4 * y.abs().max(1e-3),
            "logged {field} {x} vs {y}"
        );
    }
}

#[test]
fn two_processes_match_one_process_with_the_doubled_batch() {
    let st = Setup::new();
    let t = Instant::now();
    let (ae2, ae1) = (st.path("ae2"), st.path("ae1"));
    let o = ok(st
        .train("autoencoder", &ae2, 1, &["--nproc-per-node", "2"])
        .arg("--rendezvous-timeout")
        .arg("30"));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("[rank 0] autoencoder: steps 0..4"), "{out}");
    assert!(
        !out.contains("[rank 1] autoencoder"),
        "only rank 0 reports: {out}"
    );
    ok(&mut st.train("autoencoder", &ae1, 2, &[]));
    // Autoencoder, its Adam moments, discriminator, its moments.
    assert_same_run(&ae2, &ae1, 6);

    let (df2, df1) = (st.path("df2"), st.path("df1"));
    ok(st
        .train(
            "diffusion",
            &df2,
            1,
            &["--nproc-per-node", "2", "--autoencoder"],
        )
        .arg(&ae1));
    ok(st.train("diffusion", &df1, 2, &["--autoencoder"]).arg(&ae1));
    assert_same_run(&df2, &df1, 3);

    // Resume with another world size: a 2-rank run continued by one process.
    ok(&mut st.train("autoencoder", &ae2, 1, &["--resume", "--steps", "5"]));
    let (_, extra, step) = ckpt(&ae2);
    assert_eq!((step, extra["world_size"].as_u64()), (5, Some(1)));
    let log = read_log(&ae2.join("log.jsonl")).unwrap();
    assert_eq!(log.iter().filter(|l| l["validation"] != true).count(), 5);
    println!("distributed CLI runs: {:.1} s", t.elapsed().as_secs_f64());
}

#[test]
fn launch_environment_mistakes_fail_clearly_in_bounded_time() {
    let st = Setup::new();
    let out = st.path("run");
    // A rank whose rank 0 never comes.
    let t = Instant::now();
    let port = ldm_dist::launch::free_port().unwrap();
    let o = st
        .train("autoencoder", &out, 1, &["--rendezvous-timeout", "1"])
        .env("RANK", "1")
        .env("WORLD_SIZE", "2")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("rank 1: rank 0 did not answer within 1.0 s"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(
        !out.join("log.jsonl").exists(),
        "a failed rank writes nothing"
    );
    // Inconsistent variables.
    let o = st
        .train("autoencoder", &out, 1, &[])
        .env("RANK", "2")
        .env("WORLD_SIZE", "2")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("RANK=2 is not below WORLD_SIZE=2"),
        "{err}"
    );
    // The local launcher under another launcher.
    let o = st
        .train("autoencoder", &out, 1, &["--nproc-per-node", "2"])
        .env("RANK", "0")
        .env("WORLD_SIZE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--nproc-per-node starts its own processes"),
        "{err}"
    );
}
