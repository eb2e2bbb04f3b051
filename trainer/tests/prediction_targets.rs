//! The diffusion trainer's regression targets against MONAI Generative 0.2.3: `add_noise` and
//! `get_velocity` (tests/fixtures/monai/schedulers, velocity part of make_schedulers.py) on the
//! scaled-linear and cosine schedules, and a training step with v-prediction whose loss is the
//! MSE against that velocity.

use ldm_test_support::{monai, read_npy, rel_l2};
use ldm_trainer::init::{normals, uniform_ints, Stream};
use ldm_trainer::layers::Dims;
use ldm_trainer::losses;
use ldm_trainer::optim::{AdamConfig, MultiStepLr};
use ldm_trainer::schedule::{add_noise, alphas_cumprod, training_target};
use ldm_trainer::train::diffusion::{DiffusionConfig, DiffusionTrainer};
use ldm_weights::{BetaSchedule, PredictionType, SchedulerConfig, UnetConfig};

fn scheduler(name: &str) -> SchedulerConfig {
    let mut s = SchedulerConfig::bundle();
    if name == "cosine" {
        s.beta_schedule = BetaSchedule::Cosine { s: 8e-3 };
        (s.beta_start, s.beta_end) = (1e-4, 2e-2);
    }
    s.prediction_type = PredictionType::VPrediction;
    s
}

#[test]
fn velocity_and_noising_match_monai() {
    let dir = monai("schedulers");
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let v = &case["velocity"];
    let (shape, x0) = read_npy(&dir.join(v["x0"].as_str().unwrap()));
    let (_, eps) = read_npy(&dir.join(v["noise"].as_str().unwrap()));
    let per = x0.len() / shape[0];
    for s in v["schedules"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        let ac = alphas_cumprod(&scheduler(name)).unwrap();
        let (_, want_v) = read_npy(&dir.join(s["velocity"].as_str().unwrap()));
        let (_, want_x) = read_npy(&dir.join(s["noisy"].as_str().unwrap()));
        for (b, t) in s["timesteps"].as_array().unwrap().iter().enumerate() {
            let a = ac[t.as_u64().unwrap() as usize];
            let r = b * per..(b + 1) * per;
            let got_v = training_target(
                PredictionType::VPrediction,
                &x0[r.clone()],
                &eps[r.clone()],
                a,
            );
            let got_x = add_noise(&x0[r.clone()], &eps[r.clone()], a);
            let (ev, ex) = (
                rel_l2(&got_v, &want_v[r.clone()]),
                rel_l2(&got_x, &want_x[r]),
            );
            println!("{name} t={t}: velocity rel L2 {ev:.2e}, x_t {ex:.2e}");
            assert!(ev < 1e-6 && ex < 1e-6, "{name} t={t}: {ev:e} {ex:e}");
        }
    }
    // The other targets are the inputs themselves.
    assert_eq!(
        training_target(PredictionType::Epsilon, &x0, &eps, 0.3),
        eps
    );
    assert_eq!(training_target(PredictionType::Sample, &x0, &eps, 0.3), x0);
}

/// One step of a tiny v-prediction run: its loss is the MSE of the UNet's output (before the
/// update) against the velocity of the step's own noise and timesteps, not against the noise.
#[test]
fn a_v_prediction_step_regresses_the_velocity() {
    let cfg = DiffusionConfig {
        unet: UnetConfig {
            in_channels: 2,
            out_channels: 2,
            num_channels: vec![4, 8],
            attention_levels: vec![false, true],
            num_head_channels: vec![0, 8],
            num_res_blocks: vec![1, 1],
            norm_num_groups: 2,
            norm_eps: 1e-6,
            attention_output_projection: false,
        },
        scheduler: scheduler("scaled_linear"),
        adam: AdamConfig {
            lr: 1e-3,
            ..AdamConfig::default()
        },
        lr: MultiStepLr {
            base: 1e-3,
            milestones: vec![],
            gamma: 0.1,
        },
        scale_factor: 1.0,
        ema_decay: None,
    };
    let dims = Dims::new(2, 2, 4, 4, 4);
    let lat: Vec<f32> = (0..dims.numel())
        .map(|i| ((i as f32) * 0.37).sin())
        .collect();
    let (seed, per) = (9u64, dims.numel() / dims.n);
    let mut t = DiffusionTrainer::new(cfg.clone(), seed).unwrap();
    let before = t.params.data.clone();
    let log = t.train_step(&lat, dims).unwrap();

    // The step's draws, recomputed from the same streams.
    let ts = uniform_ints(seed, 0, Stream::Timesteps, dims.n, 1000);
    assert_eq!(ts, log.timesteps);
    let eps = normals(seed, 0, Stream::DiffusionNoise, lat.len());
    let ac = alphas_cumprod(&cfg.scheduler).unwrap();
    let (mut x_t, mut v) = (Vec::new(), Vec::new());
    for (b, &tb) in ts.iter().enumerate() {
        let r = b * per..(b + 1) * per;
        x_t.extend(add_noise(&lat[r.clone()], &eps[r.clone()], ac[tb as usize]));
        v.extend(training_target(
            PredictionType::VPrediction,
            &lat[r.clone()],
            &eps[r],
            ac[tb as usize],
        ));
    }
    let tf: Vec<f32> = ts.iter().map(|&x| x as f32).collect();
    let out = t.unet.forward(&before, &x_t, dims, &tf, false).unwrap();
    let (want, _) = losses::mse(&out.eps, &v).unwrap();
    let (eps_loss, _) = losses::mse(&out.eps, &eps).unwrap();
    println!(
        "loss {} vs MSE to velocity {want} (to noise {eps_loss})",
        log.loss
    );
    assert_eq!(log.loss, want);
    assert_ne!(log.loss, eps_loss);
}
