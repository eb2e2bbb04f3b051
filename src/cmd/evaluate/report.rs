//! `evaluate`'s printed table, from the JSON report.

use serde_json::Value;

fn fmt(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_f64)
        .map(|x| format!("{x:.4}"))
        .unwrap_or_else(|| "-".into())
}

pub(super) fn table(report: &Value) -> String {
    let mut t = String::new();
    let line = |t: &mut String, s: String| {
        t.push_str(&s);
        t.push('\n');
    };
    let s = &report["samples"];
    line(
        &mut t,
        format!(
            "samples: {} volumes of {} in {}",
            s["count"],
            s["shape"],
            s["dir"].as_str().unwrap_or("")
        ),
    );
    if let Some(r) = report["real"].as_object() {
        line(
            &mut t,
            format!(
                "real:    {} volumes in {}",
                r["count"],
                r["dir"].as_str().unwrap_or("")
            ),
        );
    }
    let p = &report["settings"];
    line(
        &mut t,
        format!(
            "window:  {} kernel {} sigma {}, data range {}, k1 {}, k2 {}; MS-SSIM weights {}",
            p["kernel_type"].as_str().unwrap_or(""),
            p["kernel_size"],
            p["kernel_sigma"],
            p["data_range"],
            p["k1"],
            p["k2"],
            p["ms_ssim_weights"]
        ),
    );
    line(&mut t, String::new());
    line(
        &mut t,
        format!(
            "{:<28} {:>8} {:>9} {:>8} {:>9} {:>8}",
            "pairs", "count", "MS-SSIM", "+/-", "SSIM", "+/-"
        ),
    );
    for (key, name) in [
        ("sample_diversity", "sample-sample (diversity)"),
        ("real_diversity", "real-real (reference)"),
        ("real_vs_sample", "real-sample"),
    ] {
        let v = &report[key];
        if v.is_object() {
            line(
                &mut t,
                format!(
                    "{:<28} {:>8} {:>9} {:>8} {:>9} {:>8}",
                    name,
                    v["pairs"].as_u64().unwrap_or(0),
                    fmt(v, "ms_ssim_mean"),
                    fmt(v, "ms_ssim_std"),
                    fmt(v, "ssim_mean"),
                    fmt(v, "ssim_std")
                ),
            );
        }
    }
    if let Some(m) = report["mmd_histogram"].as_f64() {
        line(
            &mut t,
            format!("MMD of intensity histograms (real vs samples): {m:.6}"),
        );
    }
    if report["reconstruction"].is_object() {
        let m = &report["reconstruction"]["mean"];
        line(
            &mut t,
            format!(
                "reconstruction of {} real volumes: SSIM {}  MS-SSIM {}  PSNR {} dB  L1 {}",
                report["reconstruction"]["volumes"],
                fmt(m, "ssim"),
                fmt(m, "ms_ssim"),
                fmt(m, "psnr"),
                fmt(m, "l1")
            ),
        );
    }
    if let Some(f) = report["fid"].as_object() {
        line(
            &mut t,
            format!(
                "FID of the given features ({} real, {} fake, {} features): {:.4}",
                f["real_rows"],
                f["fake_rows"],
                f["features"],
                f["fid"].as_f64().unwrap_or(f64::NAN)
            ),
        );
    }
    let i = &report["intensity"];
    line(
        &mut t,
        format!(
            "intensity mean: samples {}{}",
            fmt(i, "samples_mean"),
            if i["real_mean"].is_number() {
                format!(", real {}", fmt(i, "real_mean"))
            } else {
                String::new()
            }
        ),
    );
    line(
        &mut t,
        format!("memory: {}", report["memory"].as_str().unwrap_or("")),
    );
    t
}
