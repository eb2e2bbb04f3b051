//! Every noise scheduler option against MONAI Generative 0.2.3 (tests/fixtures/monai/schedulers,
//! made by make_schedulers.py there): each case's `noise_scheduler` section goes through the
//! converter's config reader (MONAI's argument names), the runtime plans the sampler from the
//! stored configuration, and the CPU updates run the case's sampling loop with the same
//! stand-in model and the same injected noise. The timestep lists must be equal; the final
//! samples within 1e-4 relative L2 (deterministic samplers) or 1e-6 (steps with injected noise).
//! The pipeline cases run the fixture networks end to end through `convert --config` and
//! `generate --init-noise`.

use std::path::{Path, PathBuf};
use std::process::Command;

use ldm_import::arch::Architecture;
use ldm_runtime::sampler::{ddim_update, ddpm_update, plan, pndm_update};
use ldm_runtime::schedule::Schedule;
use ldm_runtime::Sampler;
use ldm_test_support::{monai, read_npy, rel_l2};
use ldm_weights::SamplerKind;
use serde_json::{json, Value};

fn dir() -> PathBuf {
    monai("schedulers")
}

fn case_file() -> Value {
    let text = std::fs::read_to_string(dir().join("case.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The fixture's stand-in model, op by op in f32 as make_schedulers.py computes it.
fn model(x: &[f32], t: u32, t_train: usize, out: &mut [f32]) {
    let k = (0.3 + 0.7 * t as f64 / t_train as f64) as f32;
    for (o, &v) in out.iter_mut().zip(x) {
        let sq = v * v;
        let bump = sq / (sq + 1.0f32) * 0.1f32;
        *o = v * k + bump;
    }
}

/// The `noise_scheduler` section of a case, as a MONAI config file would hold it.
fn section(c: &Value) -> Value {
    let mut s = c["kwargs"].clone();
    s["_target_"] = json!(format!(
        "generative.networks.schedulers.{}",
        c["class"].as_str().unwrap()
    ));
    s["num_inference_steps"] = c["num_inference_steps"].clone();
    s
}

#[test]
fn every_scheduler_option_samples_as_monai() {
    let doc = case_file();
    let (_, noise) = read_npy(&dir().join("noise.npy"));
    let mut worst = (0.0f64, 0.0f64);
    for c in doc["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let arch = Architecture::from_json(&json!({ "noise_scheduler": section(c) }).to_string())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let cfg = arch.scheduler;
        let steps = c["num_inference_steps"].as_u64().unwrap() as usize;
        let sampler = match cfg.default_sampler {
            SamplerKind::Ddim => Sampler::Ddim {
                eta: c["eta"].as_f64().unwrap() as f32,
            },
            SamplerKind::Ddpm => Sampler::Ddpm,
            SamplerKind::Pndm => Sampler::Pndm,
        };
        let schedule = Schedule::new(&cfg).unwrap();
        let p = plan(&cfg, &schedule, sampler, steps).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want_ts: Vec<u32> = c["timesteps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(p.timesteps, want_ts, "{name}: timesteps");

        let n = noise.len();
        let step_noise = c
            .get("step_noise")
            .map(|f| read_npy(&dir().join(f.as_str().unwrap())).1);
        let mut drawn = 0usize;
        let (mut x, mut m) = (noise.clone(), vec![0f32; n]);
        let mut state = vec![0f32; p.state_vectors() * n];
        let zeros = vec![0f32; n];
        for (k, &t) in p.timesteps.iter().enumerate() {
            model(&x, t, schedule.num_train_timesteps(), &mut m);
            let row = p.row(k);
            // MONAI draws only when the step adds noise (DDPM: t > 0; DDIM: eta > 0).
            let z = if row[5] != 0.0 && p.kind != SamplerKind::Pndm {
                let all = step_noise
                    .as_ref()
                    .unwrap_or_else(|| panic!("{name}: no recorded noise"));
                drawn += 1;
                &all[(drawn - 1) * n..drawn * n]
            } else {
                &zeros[..]
            };
            match p.kind {
                SamplerKind::Ddim => ddim_update(row, p.prediction, p.clip, &mut x, &m, Some(z)),
                SamplerKind::Ddpm => ddpm_update(row, p.prediction, p.clip, &mut x, &m, z),
                SamplerKind::Pndm => pndm_update(row, p.prediction, &mut x, &m, &mut state),
            }
        }
        if let Some(all) = &step_noise {
            assert_eq!(drawn * n, all.len(), "{name}: steps that drew noise");
        }
        let (_, want) = read_npy(&dir().join(c["output"].as_str().unwrap()));
        let e = rel_l2(&x, &want);
        println!("{name}: {} steps, rel L2 {e:.2e}", p.timesteps.len());
        let stochastic = step_noise.is_some();
        let limit = if stochastic { 1e-6 } else { 1e-4 };
        assert!(e < limit, "{name}: rel L2 {e:e} (limit {limit:e})");
        let w = if stochastic {
            &mut worst.1
        } else {
            &mut worst.0
        };
        *w = w.max(e);
    }
    println!(
        "worst rel L2: deterministic {:.2e}, with injected noise {:.2e}",
        worst.0, worst.1
    );
}

/// What MONAI cannot do, or does only as NaN, is refused by name.
#[test]
fn unsupported_scheduler_arguments_are_refused_by_name() {
    let err = |s: Value| {
        Architecture::from_json(&json!({ "noise_scheduler": s }).to_string())
            .unwrap_err()
            .to_string()
    };
    let ddpm = "generative.networks.schedulers.DDPMScheduler";
    let ddim = "generative.networks.schedulers.DDIMScheduler";
    let pndm = "generative.networks.schedulers.PNDMScheduler";
    for (section, words) in [
        (
            json!({"_target_": ddpm, "variance_type": "learned_range"}),
            "learned_range",
        ),
        (
            json!({"_target_": ddim, "variance_type": "fixed_large"}),
            "variance_type",
        ),
        (
            json!({"_target_": ddpm, "skip_prk_steps": true}),
            "skip_prk_steps",
        ),
        (json!({"_target_": ddpm, "steps_offset": 1}), "steps_offset"),
        (
            json!({"_target_": pndm, "clip_sample": false}),
            "clip_sample",
        ),
        (
            json!({"_target_": pndm, "prediction_type": "sample"}),
            "sample",
        ),
        (json!({"_target_": ddim, "prediction_type": "x0"}), "x0"),
        (
            json!({"_target_": "monai.networks.schedulers.RFlowScheduler"}),
            "RFlowScheduler",
        ),
        (
            json!({"_target_": ddim, "schedule": "cosine", "beta_start": 0.001}),
            "beta_start",
        ),
        (json!({"_target_": ddim, "schedule": "karras"}), "karras"),
        (json!({"_target_": ddim, "sampler": "ddpm"}), "contradicts"),
        (
            json!({"_target_": ddim, "steps_offset": 1000}),
            "steps_offset",
        ),
        (
            json!({"_target_": ddim, "thresholding": true}),
            "thresholding",
        ),
    ] {
        let e = err(section.clone());
        assert!(e.contains(words), "{section}: {e}");
    }
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_brats-ldm")
}

fn run(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{args:?}: {text}");
    text
}

/// The fixture networks with a non-default scheduler, end to end: the config (the fixture
/// networks' sections plus the case's `noise_scheduler`) through `convert --config`, then
/// `generate --init-noise`, against MONAI's image.
#[test]
fn convert_and_generate_match_monai_with_other_schedulers() {
    let doc = case_file();
    let tmp = tempfile::tempdir().unwrap();
    let nets: Value = serde_json::from_str(
        &std::fs::read_to_string(
            ldm_test_support::fixtures_dir().join("configs/fixture_networks.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for p in doc["pipelines"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let mut config = nets.clone();
        let mut sched = p["noise_scheduler"].clone();
        sched["num_inference_steps"] = p["num_inference_steps"].clone();
        config["noise_scheduler"] = sched;
        let config_path = tmp.path().join(format!("{name}.json"));
        std::fs::write(&config_path, config.to_string()).unwrap();
        let blob = tmp.path().join(format!("{name}.blob"));
        let s = |p: &Path| p.to_str().unwrap().to_string();
        run(&[
            "convert",
            "--autoencoder",
            &s(&monai("autoencoder/autoencoder.pt")),
            "--unet",
            &s(&monai("unet/unet.pt")),
            "--config",
            &s(&config_path),
            "--out",
            &s(&blob),
        ]);
        let inspect = run(&["inspect", &s(&blob)]);
        assert!(
            inspect.contains("default ") && inspect.contains("pndm: "),
            "{inspect}"
        );
        let init = dir().join(p["noise"].as_str().unwrap());
        let out = tmp.path().join(format!("{name}_out"));
        run(&[
            "generate",
            "--model",
            &s(&blob),
            "--out",
            &s(&out),
            "--init-noise",
            &s(&init),
            "--format",
            "npy",
            "--threads",
            "2",
        ]);
        let produced = out.join("init-noise.npy");
        let (_, got) = read_npy(&produced);
        let (_, want) = read_npy(&dir().join(p["image"].as_str().unwrap()));
        let e = rel_l2(&got, &want);
        println!("{name}: image rel L2 {e:.2e}");
        assert!(e < 1e-4, "{name}: image rel L2 {e:e}");
    }
}
