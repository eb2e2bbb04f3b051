//! Shared by the C ABI tests: a small blob written from the MONAI fixtures (tiny autoencoder and
//! UNet, configs from their case.json, via ldm-test-support), the runtime's own output for
//! comparison, the paths of the staticlib/cdylib built alongside the test, and compiling C
//! sources with the `cc` crate.
#![allow(dead_code)]

use ldm_runtime::{Options, Runtime};
use ldm_weights::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The tiny fixture model: decoder and UNet from the fixtures' case.json, latent [8, 8, 8, 4]
/// (the pipeline fixture's noise shape), no scale factor (the bundle sampler's semantics).
pub fn fixture_config() -> ModelConfig {
    ldm_test_support::fixture_config()
}

/// Scratch directory of this test binary.
pub fn scratch() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The fixture blob, written once per test binary.
pub fn fixture_blob() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = scratch().join(format!("fixture-{}.blob", std::process::id()));
        ldm_test_support::write_fixture_blob(&path, &fixture_config());
        path
    })
}

/// A valid blob of the fixture model without its UNet (decoder only), written once.
pub fn decoder_only_blob() -> PathBuf {
    let mut config = fixture_config();
    config.unet = None;
    let path = scratch().join(format!("decoder-only-{}.blob", std::process::id()));
    ldm_test_support::write_fixture_blob(&path, &config);
    path
}

/// What the Rust API produces for `seed` with `steps` sampling steps and `threads` threads.
pub fn rust_reference(seed: u64, steps: usize, threads: usize) -> Vec<f32> {
    let blob = Blob::open(fixture_blob()).unwrap();
    let options = Options {
        steps: Some(steps),
        threads: Some(threads),
        ..Options::default()
    };
    let mut rt = Runtime::new(&blob, options).unwrap();
    let n: usize = rt.output_shape().iter().product();
    let mut out = vec![0f32; n];
    rt.generate(seed, &mut out, &mut |_| {}).unwrap();
    out
}

pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Directory holding this test binary, where cargo also put libldm_runtime.{a,so} of the same
/// build (the runtime's lib target declares crate-type rlib + cdylib + staticlib).
pub fn artifact_dir() -> PathBuf {
    std::env::current_exe().unwrap().parent().unwrap().to_path_buf()
}

pub fn staticlib() -> PathBuf {
    let p = artifact_dir().join("libldm_runtime.a");
    assert!(
        p.is_file(),
        "{} missing: the runtime crate must build its staticlib",
        p.display()
    );
    p
}

pub fn cdylib() -> PathBuf {
    let p = artifact_dir().join("libldm_runtime.so");
    assert!(
        p.is_file(),
        "{} missing: the runtime crate must build its cdylib",
        p.display()
    );
    p
}

pub fn include_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("include")
}

pub fn example(name: &str) -> PathBuf {
    repo_root().join("examples/c").join(name)
}

/// The platform C (or C++) compiler as the `cc` crate finds it (honours CC / CFLAGS).
pub fn compiler(cpp: bool) -> cc::Tool {
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    cc::Build::new()
        .cpp(cpp)
        .target(&target)
        .host(&target)
        .opt_level(1)
        .debug(true)
        .cargo_metadata(false)
        .cargo_warnings(false)
        .emit_rerun_if_env_changed(false)
        .get_compiler()
}

/// Native libraries a Rust staticlib needs on Linux (`rustc --print native-static-libs`).
pub const NATIVE_LIBS: &[&str] = &["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl", "-lc"];

/// Run a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Link mode of a compiled C program.
#[derive(Clone, Copy, Debug)]
pub enum Link {
    Static,
    Shared,
}

/// Compile and link one C example into the scratch directory; returns the executable.
pub fn build_c_program(source: &str, link: Link) -> PathBuf {
    let exe = scratch().join(format!(
        "{}-{:?}-{}",
        source.trim_end_matches(".c"),
        link,
        std::process::id()
    ));
    let mut cmd = compiler(false).to_command();
    cmd.args([
        "-std=c99",
        "-D_POSIX_C_SOURCE=200809L",
        "-Wall",
        "-Wextra",
        "-Wpedantic",
        "-Werror",
    ])
    .arg("-I")
    .arg(include_dir())
    .arg(example(source))
    .arg("-o")
    .arg(&exe);
    match link {
        Link::Static => {
            cmd.arg(staticlib()).args(NATIVE_LIBS);
        }
        Link::Shared => {
            let lib = cdylib();
            let dir = lib.parent().unwrap();
            cmd.arg(format!("-L{}", dir.display()))
                // DT_RPATH (not RUNPATH) so this build's library wins over an older
                // libldm_runtime.so that cargo's LD_LIBRARY_PATH may list first.
                .arg("-Wl,--disable-new-dtags")
                .arg(format!("-Wl,-rpath,{}", dir.display()))
                .arg("-lldm_runtime")
                .arg("-lpthread");
        }
    }
    run(&mut cmd);
    exe
}
