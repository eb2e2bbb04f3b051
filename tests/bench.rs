//! End-to-end tests of `brats-ldm bench` on a blob built from the MONAI fixture checkpoints:
//! the JSON report's fields are present and consistent, the table prints, bad input fails in one line.

mod generate_support;

use generate_support::*;

#[test]
fn json_report_is_complete_and_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_blob(tmp.path());
    let o = run(&[
        "bench",
        "--model",
        model.to_str().unwrap(),
        "--steps",
        "3",
        "--warmup",
        "1",
        "--threads",
        "2",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert_eq!(stdout.trim_end().lines().count(), 1, "{stdout}");
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let s = &r["step_seconds"];
    let (min, median, max) = (
        s["min"].as_f64().unwrap(),
        s["median"].as_f64().unwrap(),
        s["max"].as_f64().unwrap(),
    );
    assert!(0.0 < min && min <= median && median <= max, "{s}");
    assert_eq!(r["timed_steps"], 3);
    assert_eq!(r["warmup_steps"], 1);
    assert_eq!(r["latent_shape"], serde_json::json!([8, 8, 8, 4]));
    assert_eq!(r["output_shape"], serde_json::json!([1, 32, 32, 16]));
    let gflop = r["step_gflop"].as_f64().unwrap();
    assert!(gflop > 0.0);
    let rate = r["step_gflops_per_s"].as_f64().unwrap();
    assert!(
        (rate - gflop / median).abs() <= 1e-9 * rate.max(1.0),
        "{rate} vs {}",
        gflop / median
    );
    assert!(r["decode_seconds"].as_f64().unwrap() > 0.0);
    assert!(r["decode_gflop"].as_f64().unwrap() > 0.0);
    assert!(r["plan_bytes"].as_u64().unwrap() > 0);
    assert!(r["plan_arena_bytes"].as_u64().unwrap() > 0);
    assert!(r["plan_weights_bytes"].as_u64().unwrap() >= 4 * 1_000_000, "fixture weights are ~1.3 M f32");
    assert_eq!(r["plan_threads"], 2);
    // the same microkernel this process would choose (same CPU, same LDM_CPU_KERNEL)
    assert_eq!(r["cpu_kernel"], ldm_runtime::gemm::selected().name());
    assert!(r["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
    let checksum = format!(
        "{:016x}",
        ldm_weights::Blob::open(&model).unwrap().checksum()
    );
    assert_eq!(r["model_checksum"], checksum.as_str());
    eprintln!("bench on the fixture model: {stdout}");
}

#[test]
fn table_report_and_latent_override() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_blob(tmp.path());
    let m = model.to_str().unwrap();
    let o = run(&[
        "bench",
        "--model",
        m,
        "--steps",
        "2",
        "--warmup",
        "0",
        "--latent-shape",
        "8,4,8,4",
        "--no-decode",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    for needle in [
        "sampling step",
        "median",
        "GFLOP/s",
        "8x4x8x4 -> 1x16x32x16",
        "not measured",
        "plan",
        "peak RSS",
    ] {
        assert!(out.contains(needle), "'{needle}' missing from:\n{out}");
    }
}

#[test]
fn bad_input_gives_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_blob(tmp.path());
    let m = model.to_str().unwrap();
    assert_one_line_error(
        &run(&["bench", "--model", "/nonexistent/x.blob"]),
        &["/nonexistent/x.blob"],
    );
    assert_one_line_error(
        &run(&["bench", "--model", m, "--latent-shape", "8,5,8,4"]),
        &["divisible"],
    );
    assert_one_line_error(&run(&["bench", "--model", m, "--steps", "0"]), &["--steps"]);
    assert_one_line_error(
        &run(&["bench", "--model", m, "--device", "cuda:x"]),
        &["--device"],
    );
}
