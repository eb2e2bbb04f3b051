//! The `validation` section of a training configuration: held-out reconstruction metrics at
//! each autoencoder checkpoint and sample diversity at each diffusion checkpoint, appended to
//! log.jsonl as lines marked `"validation": true`, on tiny volumes and networks (a few seconds).

use ldm_io::affine::identity;
use ldm_trainer::data::Volume;
use ldm_trainer::train::run::{read_log, run_autoencoder, run_diffusion, RunOptions, LOG_FILE};
use ldm_trainer::train::setup::TrainConfig;

fn tiny() -> TrainConfig {
    let mut c = TrainConfig::cpu_small();
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
    ae.trainer.lr_g.milestones = vec![];
    ae.batch_size = 1;
    ae.steps = 4;
    ae.checkpoint_every = 2;
    let d = &mut c.diffusion;
    d.unet.in_channels = 2;
    d.unet.out_channels = 2;
    d.unet.num_channels = vec![8, 16];
    d.unet.num_head_channels = vec![0, 8];
    d.unet.norm_num_groups = 4;
    d.lr.milestones = vec![];
    d.batch_size = 1;
    d.steps = 2;
    d.checkpoint_every = 2;
    c.validation.holdout = 1;
    c.validation.diversity_samples = 3;
    c.validation.diversity_steps = 2;
    c
}

/// A fresh scratch folder for one test (removed when dropped).
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("ldm-validation-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn volumes() -> Vec<Volume> {
    (0..3u64)
        .map(|s| {
            let data = (0..16 * 16 * 12)
                .map(|n| (((n as u64 * 2654435761 + s * 977) % 1000) as f32) / 1000.0)
                .collect();
            Volume {
                dims: [16, 16, 12],
                data,
                affine: identity(),
            }
        })
        .collect()
}

#[test]
fn checkpoints_log_reconstruction_and_diversity() {
    let dir = Scratch::new("log");
    let cfg = tiny();
    let vols = volumes();
    let ae_dir = dir.path().join("ae");
    let opts = |out| RunOptions {
        config: &cfg,
        volumes: &vols,
        data_description: "test".into(),
        out,
        resume: false,
        steps: None,
        seed: None,
        parallel: None,
    };
    run_autoencoder(&opts(&ae_dir), &mut |_| {}).unwrap();
    let log = read_log(&ae_dir.join(LOG_FILE)).unwrap();
    let val: Vec<_> = log.iter().filter(|l| l["validation"] == true).collect();
    assert_eq!(val.len(), 2, "one line per checkpoint: {val:?}");
    assert_eq!(val[0]["step"], 1);
    for v in &val {
        assert_eq!(v["val_volumes"], 1);
        let ssim = v["val_ssim"].as_f64().unwrap();
        let (psnr, l1) = (
            v["val_psnr"].as_f64().unwrap(),
            v["val_l1"].as_f64().unwrap(),
        );
        assert!(
            ssim > -1.0 && ssim < 1.0 && psnr.is_finite() && l1 > 0.0,
            "{v}"
        );
    }
    // training saw the other two volumes only
    assert_eq!(log.iter().filter(|l| l["validation"] != true).count(), 4);

    let df_dir = dir.path().join("df");
    run_diffusion(&opts(&df_dir), &ae_dir, &mut |_| {}).unwrap();
    let log = read_log(&df_dir.join(LOG_FILE)).unwrap();
    let val: Vec<_> = log.iter().filter(|l| l["validation"] == true).collect();
    assert_eq!(val.len(), 1, "{log:?}");
    assert_eq!(val[0]["diversity_samples"], 3);
    assert_eq!(
        val[0]["diversity_metric"], "ssim",
        "16x16x12 is too small for MS-SSIM's five scales"
    );
    assert!(val[0]["diversity_mean"].as_f64().unwrap().is_finite());
}

#[test]
fn a_holdout_of_every_volume_is_refused() {
    let dir = Scratch::new("holdout");
    let mut cfg = tiny();
    cfg.validation.holdout = 3;
    let vols = volumes();
    let out = dir.path().join("ae");
    let o = RunOptions {
        config: &cfg,
        volumes: &vols,
        data_description: "test".into(),
        out: &out,
        resume: false,
        steps: None,
        seed: None,
        parallel: None,
    };
    let e = run_autoencoder(&o, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("validation.holdout 3"), "{e}");
}

#[test]
fn validation_sections_that_cannot_run_are_refused_with_the_configuration() {
    let refused = |edit: &dyn Fn(&mut TrainConfig), needle: &str| {
        let mut cfg = tiny();
        edit(&mut cfg);
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains(needle), "expected {needle:?} in: {e}");
    };
    tiny().validate().unwrap();
    refused(
        &|c| {
            c.data.roi = [16, 16, 8];
            c.autoencoder.patch = [16, 16, 8];
        },
        "smaller than the SSIM window [11, 11, 11]");
    refused(&|c| c.validation.diversity_samples = 257, "diversity_samples 257 is above 256");
    refused(
        &|c| {
            c.data.roi = [512, 512, 512];
            c.autoencoder.patch = [16, 16, 12];
            c.validation.diversity_samples = 16;
        },
        "would hold 8.0 GiB",
    );
    refused(&|c| c.validation.diversity_steps = 0, "diversity_steps 0 must be between 1 and the scheduler's");
    refused(
        &|c| c.validation.diversity_steps = c.diffusion.scheduler.num_train_timesteps as usize + 1,
        "must be between 1 and the scheduler's",
    );
    // Without a diversity check the diffusion settings do not matter; without any validation
    // the small roi is fine.
    let mut cfg = tiny();
    cfg.validation.diversity_samples = 0;
    cfg.validation.diversity_steps = 0;
    cfg.validate().unwrap();
    cfg.validation.holdout = 0;
    cfg.data.roi = [16, 16, 8];
    cfg.autoencoder.patch = [16, 16, 8];
    cfg.validate().unwrap();
}
