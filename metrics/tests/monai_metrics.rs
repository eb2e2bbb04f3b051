//! Every metric against MONAI 1.5's own values (tests/fixtures/monai/metrics, made by
//! make_metrics.py there): random and real volumes, non-cubic shapes, batches of two, two
//! channels; each within 1e-5 relative of MONAI's per-item value.

use ldm_metrics::fid::fid;
use ldm_metrics::mmd::{mmd, Rows};
use ldm_metrics::regression::{mae, mse, psnr};
use ldm_metrics::ssim::{check_ms_ssim_size, ms_ssim, ssim, KernelType, SsimParams};
use ldm_metrics::Volume;
use ldm_test_support::{monai, read_npy};
use serde_json::Value;

const REL: f64 = 1e-5;

fn cases() -> serde_json::Map<String, Value> {
    let path = monai("metrics/case.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_object().unwrap().clone()
}

/// A fixture batch: shape [N, C, D, H, W] and data.
fn batch(name: &Value) -> (Vec<usize>, Vec<f32>) {
    let (shape, data) = read_npy(&monai(&format!("metrics/{}", name.as_str().unwrap())));
    assert_eq!(shape.len(), 5, "{name}: {shape:?}");
    (shape, data)
}

fn items<'a>(shape: &[usize], data: &'a [f32]) -> Vec<Volume<'a>> {
    let s = [shape[1], shape[2], shape[3], shape[4]];
    let n = s.iter().product::<usize>();
    data.chunks(n).map(|c| Volume::new(s, c).unwrap()).collect()
}

fn params(p: &Value) -> SsimParams {
    let arr3 = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let ks = arr3(&p["kernel_size"]);
    let sg = arr3(&p["kernel_sigma"]);
    SsimParams {
        data_range: p["data_range"].as_f64().unwrap(),
        kernel_type: match p["kernel_type"].as_str().unwrap() {
            "gaussian" => KernelType::Gaussian,
            "uniform" => KernelType::Uniform,
            other => panic!("kernel type {other}"),
        },
        kernel_size: [ks[0] as usize, ks[1] as usize, ks[2] as usize],
        kernel_sigma: [sg[0], sg[1], sg[2]],
        k1: p["k1"].as_f64().unwrap(),
        k2: p["k2"].as_f64().unwrap(),
    }
}

fn close(name: &str, got: f64, want: f64) {
    let rel = (got - want).abs() / want.abs().max(1e-12);
    assert!(
        rel <= REL,
        "{name}: got {got}, MONAI {want}, relative {rel:.2e}"
    );
}

fn expected(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn run_kind(kind: &str) -> usize {
    let mut ran = 0;
    for (name, c) in cases() {
        if c["kind"] != kind {
            continue;
        }
        ran += 1;
        match kind {
            "ssim" | "ms_ssim" => {
                let (sx, dx) = batch(&c["x"]);
                let (sy, dy) = batch(&c["y"]);
                let p = params(&c["params"]);
                let want = expected(&c["expected"]);
                let (xs, ys) = (items(&sx, &dx), items(&sy, &dy));
                assert_eq!(xs.len(), want.len());
                for (i, (x, y)) in xs.iter().zip(&ys).enumerate() {
                    let got = if kind == "ssim" {
                        ssim(x, y, &p).unwrap()
                    } else {
                        ms_ssim(x, y, &p, &expected(&c["weights"])).unwrap().ms_ssim
                    };
                    close(&format!("{name}[{i}]"), got, want[i]);
                }
            }
            "regression" => {
                let (sx, dx) = batch(&c["x"]);
                let (sy, dy) = batch(&c["y"]);
                let max_val = c["max_val"].as_f64().unwrap();
                for (i, (x, y)) in items(&sx, &dx).iter().zip(&items(&sy, &dy)).enumerate() {
                    close(
                        &format!("{name} mse[{i}]"),
                        mse(x, y).unwrap(),
                        expected(&c["mse"])[i],
                    );
                    close(
                        &format!("{name} mae[{i}]"),
                        mae(x, y).unwrap(),
                        expected(&c["mae"])[i],
                    );
                    close(
                        &format!("{name} psnr[{i}]"),
                        psnr(x, y, max_val).unwrap(),
                        expected(&c["psnr"])[i],
                    );
                }
            }
            "mmd" | "fid" => {
                let read =
                    |k: &str| read_npy(&monai(&format!("metrics/{}", c[k].as_str().unwrap())));
                let ((sy, dy), (sp, dp)) = (read("y"), read("y_pred"));
                let y = Rows::new(sy[0], sy[1], &dy).unwrap();
                let p = Rows::new(sp[0], sp[1], &dp).unwrap();
                let got = if kind == "mmd" {
                    mmd(&y, &p).unwrap()
                } else {
                    fid(&p, &y).unwrap()
                };
                close(&name, got, c["expected"].as_f64().unwrap());
            }
            other => panic!("kind {other}"),
        }
    }
    ran
}

#[test]
fn ssim_matches_monai() {
    assert_eq!(run_kind("ssim"), 6);
}

#[test]
fn ms_ssim_matches_monai() {
    assert_eq!(run_kind("ms_ssim"), 4);
}

#[test]
fn mse_mae_psnr_match_monai() {
    assert_eq!(run_kind("regression"), 3);
}

#[test]
fn mmd_and_fid_match_monai() {
    assert_eq!(run_kind("mmd"), 1);
    assert_eq!(run_kind("fid"), 1);
}

#[test]
fn ms_ssim_refuses_small_volumes_with_monais_message() {
    let c = &cases()["ms_ssim_too_small"];
    let s: Vec<usize> = c["spatial"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let p = SsimParams {
        kernel_size: [c["kernel_size"].as_u64().unwrap() as usize; 3],
        ..SsimParams::default()
    };
    let e = check_ms_ssim_size([s[0], s[1], s[2]], &p, &ldm_metrics::ssim::MS_SSIM_WEIGHTS)
        .unwrap_err();
    assert_eq!(e.to_string(), c["message"].as_str().unwrap());
}
