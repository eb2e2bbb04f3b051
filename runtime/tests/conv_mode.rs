//! The convolution algorithm (`LDM_CPU_CONV`): MONAI parity of one decode and one UNet forward
//! in the selected mode, the same test re-run in child processes with `direct` and `winograd`
//! (the two must differ in rounding, so Winograd really ran), and a clear `InvalidOption` error
//! (no panic) for a name that is not a mode.

mod common;

use common::*;
use ldm_runtime::conv::winograd::{self, ConvMode, CONV_ENV};
use ldm_runtime::{Options, Runtime, RuntimeError, Sampler};

fn opts(latent: [usize; 4]) -> Options {
    Options {
        latent_shape: Some(latent),
        steps: Some(50),
        sampler: Some(Sampler::Ddim { eta: 0.0 }),
        ..Options::default()
    }
}

#[test]
fn decode_and_unet_match_monai_in_the_selected_mode() {
    let mode = winograd::init().unwrap();
    if let Some(forced) = std::env::var(CONV_ENV)
        .ok()
        .and_then(|v| ConvMode::parse(&v))
    {
        assert_eq!(mode, forced);
    }
    let (zs, z) = npy("autoencoder/decode_z.npy");
    let (_, want) = npy("autoencoder/decode_image.npy");
    let latent = [zs[1], zs[2], zs[3], zs[4]];
    let mut rt = Runtime::new(
        &fixture_blob(&config(true, false, 1.0, latent.map(|v| v as u32))),
        opts(latent),
    )
    .unwrap();
    let mut out = vec![0f32; want.len()];
    rt.decode(&z, &mut out).unwrap();
    let e = rel_l2(&out, &want);
    println!("conv {mode}: decode rel L2 {e:.6e}");
    assert!(e < 1e-5, "conv {mode}: decode rel L2 {e}");

    let (xs, x) = npy("unet/x.npy");
    let latent = [xs[1], xs[2], xs[3], xs[4]];
    let mut rt = Runtime::new(
        &fixture_blob(&config(false, true, 1.0, latent.map(|v| v as u32))),
        opts(latent),
    )
    .unwrap();
    for t in [0u32, 999] {
        let (_, want) = npy(&format!("unet/eps_t{t}.npy"));
        let mut eps = vec![0f32; want.len()];
        rt.unet_forward(&x, t, &mut eps).unwrap();
        let e = rel_l2(&eps, &want);
        println!("conv {mode}: unet t={t} rel L2 {e:.6e}");
        assert!(e < 1e-5, "conv {mode}: unet t={t} rel L2 {e}");
    }
}

/// The printed errors of one child run, in order.
fn errors(text: &str, mode: ConvMode) -> Vec<String> {
    let prefix = format!("conv {mode}: ");
    text.lines()
        .filter_map(|l| l.find(&prefix).map(|i| &l[i..]))
        .map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn both_modes_match_monai() {
    let mut runs = Vec::new();
    for mode in ConvMode::ALL {
        let (ok, text) = child(
            "decode_and_unet_match_monai_in_the_selected_mode",
            CONV_ENV,
            mode.name(),
        );
        assert!(ok, "conv {mode}:\n{text}");
        let e = errors(&text, mode);
        assert_eq!(e.len(), 3, "conv {mode} did not run:\n{text}");
        runs.push(e);
    }
    // The fixture decoder and UNet both have convolutions Winograd applies to.
    for (i, what) in ["decode", "unet t=0", "unet t=999"].iter().enumerate() {
        assert_ne!(
            runs[0][i], runs[1][i],
            "{what}: direct and winograd gave the same result"
        );
    }
}

#[test]
fn runtime_rejects_an_unknown_mode() {
    let latent = [8usize, 4, 4, 4];
    let blob = fixture_blob(&config(true, false, 1.0, latent.map(|v| v as u32)));
    match (winograd::init(), Runtime::new(&blob, opts(latent))) {
        (Ok(_), Ok(_)) => println!("runtime built"),
        (Err(_), Err(RuntimeError::InvalidOption(m))) => {
            assert!(m.contains(CONV_ENV), "{m}");
            println!("rejected: {m}");
        }
        (i, r) => panic!(
            "init {:?} but Runtime::new {:?}",
            i.map_err(|e| e.to_string()),
            r.map(|_| ()).map_err(|e| e.to_string())
        ),
    }
}

#[test]
fn unknown_modes_are_clear_errors() {
    let (ok, text) = child("runtime_rejects_an_unknown_mode", CONV_ENV, "fft");
    assert!(ok, "{text}");
    assert!(
        text.contains("rejected: ") && text.contains("\"fft\""),
        "fft was not rejected:\n{text}"
    );
}
