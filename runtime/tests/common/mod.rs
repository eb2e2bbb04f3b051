//! Runtime test helpers on top of ldm-test-support: fixture `.npy` files by their path under
//! tests/fixtures/monai, model configs of the fixture networks and in-memory fixture blobs.
#![allow(dead_code)]

use ldm_weights::{Blob, DType, ModelConfig, SchedulerConfig};
use std::process::Command;

/// Reads `tests/fixtures/monai/<rel>` (little-endian f32 C-order .npy).
pub fn npy(rel: &str) -> (Vec<usize>, Vec<f32>) {
    ldm_test_support::read_npy(&ldm_test_support::monai(rel))
}

/// Relative L2 distance `|a - b| / |b|`.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    ldm_test_support::rel_l2(a, b)
}

/// The fixture networks with the bundle's scheduler (clip_sample on), the given parts, scale
/// factor and latent shape.
pub fn config(decoder: bool, unet: bool, scale: f32, latent: [u32; 4]) -> ModelConfig {
    let full = ldm_test_support::fixture_config();
    ModelConfig {
        decoder: if decoder { full.decoder } else { None },
        unet: if unet { full.unet } else { None },
        scheduler: SchedulerConfig::bundle(),
        scale_factor: scale,
        latent_shape: latent,
        provenance: Default::default(),
        ..full
    }
}

/// A blob holding exactly the tensors `cfg` needs, taken from the MONAI fixture checkpoints.
pub fn fixture_blob(cfg: &ModelConfig) -> Blob {
    ldm_test_support::fixture_blob(cfg, DType::F32)
}

/// Like `fixture_blob`, storing every tensor as `dtype`.
pub fn fixture_blob_dtype(cfg: &ModelConfig, dtype: DType) -> Blob {
    ldm_test_support::fixture_blob(cfg, dtype)
}

/// Runs test `name` of the current test binary in a child process with the environment
/// variable `var` set to `value`; returns whether it passed and its output. Under an emulator (a
/// cross build run by qemu-user), `LDM_TEST_RUNNER` names the command that runs the child, e.g.
/// `qemu-aarch64 -L /usr/aarch64-linux-gnu`.
pub fn child(name: &str, var: &str, value: &str) -> (bool, String) {
    let exe = std::env::current_exe().unwrap();
    let runner = std::env::var("LDM_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    let mut cmd = match words.next() {
        Some(prog) => {
            let mut c = Command::new(prog);
            c.args(words).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let out = cmd
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(var, value)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); under an emulator set LDM_TEST_RUNNER",
                exe.display()
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
