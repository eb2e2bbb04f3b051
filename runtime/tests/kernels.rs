//! The microkernel choice (`LDM_CPU_KERNEL`): MONAI parity of one decode and one UNet forward on
//! the selected kernel, the same test re-run in a child process under every other kernel this
//! CPU has, and a clear `InvalidOption` error (no panic) for a kernel that does not exist or that
//! the CPU lacks.

mod common;

use common::*;
use ldm_runtime::gemm::{self, Kernel, KERNEL_ENV};
use ldm_runtime::{Options, Runtime, RuntimeError, Sampler};

fn opts(latent: [usize; 4]) -> Options {
    Options { latent_shape: Some(latent), steps: Some(50), sampler: Some(Sampler::Ddim { eta: 0.0 }), ..Options::default() }
}

#[test]
fn decode_and_unet_match_monai_on_the_selected_kernel() {
    let kernel = gemm::init().unwrap();
    if let Some(forced) = std::env::var(KERNEL_ENV).ok().and_then(|v| Kernel::parse(&v)) {
        assert_eq!(kernel, forced);
    }
    let (zs, z) = npy("autoencoder/decode_z.npy");
    let (_, want) = npy("autoencoder/decode_image.npy");
    let latent = [zs[1], zs[2], zs[3], zs[4]];
    let mut rt = Runtime::new(&fixture_blob(&config(true, false, 1.0, latent.map(|v| v as u32))), opts(latent)).unwrap();
    let mut out = vec![0f32; want.len()];
    rt.decode(&z, &mut out).unwrap();
    let e = rel_l2(&out, &want);
    println!("kernel {kernel}: decode rel L2 {e:.3e}");
    assert!(e < 1e-5, "kernel {kernel}: decode rel L2 {e}");

    let (xs, x) = npy("unet/x.npy");
    let latent = [xs[1], xs[2], xs[3], xs[4]];
    let mut rt = Runtime::new(&fixture_blob(&config(false, true, 1.0, latent.map(|v| v as u32))), opts(latent)).unwrap();
    for t in [0u32, 999] {
        let (_, want) = npy(&format!("unet/eps_t{t}.npy"));
        let mut eps = vec![0f32; want.len()];
        rt.unet_forward(&x, t, &mut eps).unwrap();
        let e = rel_l2(&eps, &want);
        println!("kernel {kernel}: unet t={t} rel L2 {e:.3e}");
        assert!(e < 1e-5, "kernel {kernel}: unet t={t} rel L2 {e}");
    }
}

#[test]
fn every_available_kernel_matches_monai() {
    let mut ran = 0;
    for k in Kernel::ALL.into_iter().filter(|k| k.available()) {
        let (ok, text) = child("decode_and_unet_match_monai_on_the_selected_kernel", KERNEL_ENV, k.name());
        assert!(ok, "kernel {k}:\n{text}");
        assert!(text.contains(&format!("kernel {k}: decode rel L2")), "kernel {k} did not run:\n{text}");
        ran += 1;
    }
    assert!(ran >= 2, "only {ran} kernels ran (portable and at least one SIMD kernel expected)");
}

/// With `LDM_CPU_KERNEL` naming a kernel this CPU cannot run, `Runtime::new` is an
/// `InvalidOption` error that names the variable; otherwise the runtime builds.
#[test]
fn runtime_rejects_a_kernel_the_cpu_lacks() {
    let latent = [8usize, 4, 4, 4];
    let cfg = config(true, false, 1.0, latent.map(|v| v as u32));
    let blob = fixture_blob(&cfg);
    match (gemm::init(), Runtime::new(&blob, opts(latent))) {
        (Ok(_), Ok(_)) => println!("runtime built"),
        (Err(_), Err(RuntimeError::InvalidOption(m))) => {
            assert!(m.contains(KERNEL_ENV), "{m}");
            println!("rejected: {m}");
        }
        (i, r) => panic!("init {:?} but Runtime::new {:?}", i.map_err(|e| e.to_string()), r.map(|_| ()).map_err(|e| e.to_string())),
    }
}

#[test]
fn unknown_or_missing_kernels_are_clear_errors() {
    let missing = Kernel::ALL.into_iter().find(|k| !k.available()).map_or("no-such-kernel", |k| k.name());
    for value in ["no-such-kernel", missing] {
        let (ok, text) = child("runtime_rejects_a_kernel_the_cpu_lacks", KERNEL_ENV, value);
        assert!(ok, "{value}:\n{text}");
        assert!(text.contains("rejected: ") && text.contains(value), "{value} was not rejected:\n{text}");
    }
}
