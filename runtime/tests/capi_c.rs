//! C ABI end to end: compiles the C programs in examples/c with the `cc` crate, links them
//! against the staticlib and cdylib that cargo built alongside this test, and checks that
//! (1) the C example's volume is byte-identical to the Rust API's for the same seed,
//! (2) every misuse / threading check in abi_checks.c passes,
//! (3) the header agrees with the Rust side (constants, struct layouts, exported functions).
//! Linux only (pthreads, the staticlib's native libraries). The valgrind run is #[ignore]d:
//! `cargo test -p ldm-runtime --test capi_c -- --ignored` (about a minute).
#![cfg(target_os = "linux")]

mod capi_support;

use capi_support::*;
use ldm_runtime::capi::{status, types, BratsLdmOptions, BratsLdmOutputInfo, BratsLdmPlan, BratsLdmProgress};
use std::collections::BTreeSet;
use std::mem::{offset_of, size_of};
use std::process::Command;

const SEED: u64 = 20260;
const STEPS: usize = 10;
const THREADS: usize = 2;

fn generate_with(exe: &std::path::Path, tag: &str) -> Vec<u8> {
    let out = scratch().join(format!("volume-{tag}-{}.f32", std::process::id()));
    let output = run(Command::new(exe)
        .arg(fixture_blob())
        .arg(&out)
        .arg(SEED.to_string())
        .arg(STEPS.to_string())
        .arg(THREADS.to_string()));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    bytes
}

fn check_same_bytes(c_bytes: &[u8]) {
    let rust = rust_reference(SEED, STEPS, THREADS);
    assert_eq!(c_bytes.len(), rust.len() * 4, "C output length");
    assert!(rust.iter().all(|v| v.is_finite()));
    let rust_bytes = f32_bytes(&rust);
    let first_diff = c_bytes.iter().zip(&rust_bytes).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "C and Rust outputs differ (first differing byte)");
}

#[test]
fn c_example_static_matches_rust_api_bytes() {
    let exe = build_c_program("generate.c", Link::Static);
    check_same_bytes(&generate_with(&exe, "static"));
}

#[test]
fn c_example_shared_matches_rust_api_bytes() {
    let exe = build_c_program("generate.c", Link::Shared);
    check_same_bytes(&generate_with(&exe, "shared"));
}

#[test]
fn c_abi_misuse_threads_and_cancellation_checks_pass() {
    let exe = build_c_program("abi_checks.c", Link::Static);
    let out = run(Command::new(&exe).arg(fixture_blob()).arg("3"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.ends_with(" passed, 0 failed"), "{last}");
    assert!(!stdout.contains("FAIL"));
}

#[test]
fn c_example_reports_bad_input_without_crashing() {
    let exe = build_c_program("generate.c", Link::Static);
    let missing = scratch().join("does-not-exist.blob");
    let out = Command::new(&exe)
        .arg(&missing)
        .arg(scratch().join("x.f32"))
        .arg("1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("BRATS_LDM_ERR_IO") && stderr.contains("does-not-exist.blob"),
        "{stderr}"
    );
}

#[test]
fn a_valid_blob_without_a_unet_is_refused_at_create() {
    let path = std::ffi::CString::new(decoder_only_blob().to_str().unwrap()).unwrap();
    let mut g = std::ptr::NonNull::<ldm_runtime::capi::BratsLdmGenerator>::dangling().as_ptr();
    let status = unsafe { ldm_runtime::capi::brats_ldm_create_from_path(path.as_ptr(), std::ptr::null(), &mut g) };
    assert_eq!(status, status::ERR_INVALID_BLOB);
    assert!(g.is_null());
    let message = unsafe { std::ffi::CStr::from_ptr(ldm_runtime::capi::brats_ldm_last_error()) };
    assert!(message.to_str().unwrap().contains("no UNet"), "{message:?}");
}

/// A C11 file of static assertions generated from the Rust definitions: if the header drifts
/// from the code (a constant, a field offset, a struct size, the version), it does not compile.
fn layout_assertions() -> String {
    let mut s = String::from("#include <stddef.h>\n#include \"brats_ldm.h\"\n");
    let mut check = |expr: String| s.push_str(&format!("_Static_assert({expr}, \"{}\");\n", expr.replace('"', "'")));
    for (code, name) in status::STATUS_NAMES {
        check(format!("{name} == {code}"));
    }
    for (name, value) in [
        ("BRATS_LDM_DEVICE_CPU", types::DEVICE_CPU),
        ("BRATS_LDM_DEVICE_CUDA", types::DEVICE_CUDA),
        ("BRATS_LDM_PRECISION_F32", types::PRECISION_F32),
        ("BRATS_LDM_PRECISION_F16", types::PRECISION_F16),
        ("BRATS_LDM_PRECISION_BF16", types::PRECISION_BF16),
        ("BRATS_LDM_SAMPLER_DEFAULT", types::SAMPLER_DEFAULT),
        ("BRATS_LDM_SAMPLER_DDIM", types::SAMPLER_DDIM),
        ("BRATS_LDM_SAMPLER_DDPM", types::SAMPLER_DDPM),
        ("BRATS_LDM_SAMPLER_PNDM", types::SAMPLER_PNDM),
        ("BRATS_LDM_STAGE_SAMPLING", types::STAGE_SAMPLING),
        ("BRATS_LDM_STAGE_DECODING", types::STAGE_DECODING),
    ] {
        check(format!("{name} == {value}"));
    }
    for (name, value) in [
        ("MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ] {
        check(format!("BRATS_LDM_VERSION_{name} == {value}"));
    }
    macro_rules! layout {
        ($c:literal, $t:ty, [$($f:ident),*]) => {
            check(format!("sizeof({}) == {}", $c, size_of::<$t>()));
            $( check(format!("offsetof({}, {}) == {}", $c, stringify!($f), offset_of!($t, $f))); )*
        };
    }
    layout!(
        "brats_ldm_options",
        BratsLdmOptions,
        [
            struct_size,
            device,
            device_index,
            precision,
            sampler,
            eta,
            steps,
            threads,
            latent_shape,
            max_memory
        ]
    );
    layout!(
        "brats_ldm_plan",
        BratsLdmPlan,
        [weight_bytes, arena_bytes, workspace_bytes, state_bytes, total_bytes]
    );
    layout!(
        "brats_ldm_output_info",
        BratsLdmOutputInfo,
        [
            shape,
            latent_shape,
            num_floats,
            steps,
            spacing_mm,
            intensity_range,
            orientation
        ]
    );
    layout!(
        "brats_ldm_progress",
        BratsLdmProgress,
        [stage, step, total_steps, timestep]
    );
    // Field widths: a same-offset field of another width would still break callers.
    for (field, width) in [
        ("brats_ldm_options, eta", 4),
        ("brats_ldm_options, max_memory", 8),
        ("brats_ldm_options, latent_shape", 16),
        ("brats_ldm_plan, total_bytes", 8),
        ("brats_ldm_output_info, num_floats", 8),
        ("brats_ldm_output_info, orientation", 16),
        ("brats_ldm_output_info, spacing_mm", 12),
        ("brats_ldm_progress, timestep", 4),
    ] {
        let (ty, f) = field.split_once(", ").unwrap();
        check(format!("sizeof((({ty} *)0)->{f}) == {width}"));
    }
    s
}

#[test]
fn header_constants_and_layouts_match_rust() {
    let dir = scratch();
    let c_file = dir.join(format!("layout-{}.c", std::process::id()));
    std::fs::write(&c_file, layout_assertions()).unwrap();
    run(compiler(false)
        .to_command()
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Wpedantic",
            "-Werror",
            "-fsyntax-only",
            "-I",
        ])
        .arg(include_dir())
        .arg(&c_file));
    // The header also compiles as C++ (extern "C" block), for C++ callers.
    let cpp_file = dir.join(format!("header-{}.cpp", std::process::id()));
    std::fs::write(
        &cpp_file,
        "#include \"brats_ldm.h\"\nint main() { return brats_ldm_last_error() == nullptr; }\n",
    )
    .unwrap();
    run(compiler(true)
        .to_command()
        .args(["-std=c++11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-I"])
        .arg(include_dir())
        .arg(&cpp_file));
}

fn header_functions() -> BTreeSet<String> {
    let header = std::fs::read_to_string(include_dir().join("brats_ldm.h")).unwrap();
    let mut names = BTreeSet::new();
    for line in header
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('#') && !l.starts_with('/'))
    {
        if let Some(open) = line.find('(') {
            let name = line[..open].rsplit([' ', '*']).next().unwrap_or_default();
            if name.starts_with("brats_ldm_") && !line.starts_with("typedef") {
                names.insert(name.to_string());
            }
        }
    }
    names
}

fn rust_exports() -> BTreeSet<String> {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/capi/exports.rs")).unwrap();
    src.lines()
        .filter_map(|l| l.split_once("extern \"C\" fn ").map(|(_, rest)| rest))
        .map(|rest| rest.split('(').next().unwrap().to_string())
        .collect()
}

#[test]
fn header_declares_exactly_the_exported_functions() {
    let declared = header_functions();
    let exported = rust_exports();
    assert_eq!(declared.len(), 12, "{declared:?}");
    assert_eq!(declared, exported);
    // ...and the shared library really exports them (dynamic symbol table).
    let nm = Command::new("nm").args(["-D", "--defined-only"]).arg(cdylib()).output();
    match nm {
        Ok(out) if out.status.success() => {
            let symbols: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().last())
                .filter(|s| s.starts_with("brats_ldm_"))
                .map(str::to_string)
                .collect();
            assert_eq!(symbols, declared, "exported dynamic symbols");
        }
        _ => eprintln!("nm not available: skipped the dynamic symbol check"),
    }
}

fn valgrind(args: &[&std::ffi::OsStr]) -> String {
    let out = run(Command::new("valgrind")
        .args(["--tool=memcheck", "--error-exitcode=99", "--leak-check=full"])
        .args([
            "--errors-for-leak-kinds=definite,indirect,possible",
            "--show-leak-kinds=definite,indirect,possible",
        ])
        .args(args));
    let report = String::from_utf8_lossy(&out.stderr).to_string();
    let summary: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("ERROR SUMMARY") || l.contains("lost:"))
        .collect();
    eprintln!("{}", summary.join("\n"));
    assert!(report.contains("ERROR SUMMARY: 0 errors"), "{report}");
    report
}

/// Valgrind memcheck over both C programs (static link): no invalid reads/writes, no use of
/// uninitialised values, no leaks. Slow (valgrind is ~50x), hence ignored by default.
#[test]
#[ignore]
fn c_programs_run_clean_under_valgrind() {
    let checks = build_c_program("abi_checks.c", Link::Static);
    valgrind(&[checks.as_os_str(), fixture_blob().as_os_str(), "2".as_ref()]);
    let example = build_c_program("generate.c", Link::Static);
    let out = scratch().join("valgrind-volume.f32");
    valgrind(&[
        example.as_os_str(),
        fixture_blob().as_os_str(),
        out.as_os_str(),
        "3".as_ref(),
        "2".as_ref(),
        "2".as_ref(),
    ]);
    // Valgrind's CPU hides AVX-512, so the runtime takes another GEMM path there (other
    // summation order): the volume matches the native one closely, not bit for bit.
    let bytes = std::fs::read(&out).unwrap();
    let got: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let want = rust_reference(3, 2, 2);
    assert_eq!(got.len(), want.len());
    let diff: f64 = got.iter().zip(&want).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    let rel = (diff / norm).sqrt();
    eprintln!("volume under valgrind vs native: relative L2 {rel:.2e}");
    assert!(rel < 1e-5, "relative L2 {rel:e}");
}
