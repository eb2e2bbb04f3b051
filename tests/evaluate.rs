//! End-to-end tests of `brats-ldm evaluate` on small hand-made NIfTI volumes: the report's pair
//! counts and values against ldm-metrics called directly, the same numbers when memory allows
//! only one volume per block, the contact sheet's size, reconstructions through a fixture blob
//! with an encoder, FID of .npy features, and one-line errors that name the file with nothing
//! written for mismatched shapes, an empty folder, a non-NIfTI file and NaN voxels.

mod generate_support;

use std::path::{Path, PathBuf};

use generate_support::{assert_one_line_error, run, stderr};
use ldm_metrics::ssim::{ms_ssim, SsimParams};
use ldm_metrics::Volume as MVolume;
use ldm_trainer::data::{write_volume, Volume};

const DIMS: [usize; 3] = [16, 20, 16];
/// Small volumes need a small window and few scales (MONAI's MS-SSIM size rule).
const WINDOW: [&str; 4] = ["--kernel-size", "3", "--ms-ssim-weights", "0.4,0.6"];

fn affine(spacing: f64) -> [[f64; 4]; 4] {
    let mut a = [[0.0; 4]; 4];
    for (i, row) in a.iter_mut().enumerate() {
        row[i] = if i < 3 { spacing } else { 1.0 };
    }
    a
}

/// A smooth blob whose position and brightness depend on `seed`, plus a little texture.
fn volume(seed: u64, dims: [usize; 3]) -> Vec<f32> {
    let [d, h, w] = dims;
    let c = [
        (3 + seed % 5) as f32,
        (6 + seed % 7) as f32,
        (5 + seed % 4) as f32,
    ];
    (0..d * h * w)
        .map(|n| {
            let (i, j, k) = ((n / (h * w)) as f32, ((n / w) % h) as f32, (n % w) as f32);
            let r2 = (i - c[0]).powi(2) + (j - c[1]).powi(2) + (k - c[2]).powi(2);
            let tex = (((n as u64).wrapping_mul(2654435761).wrapping_add(seed * 97)) % 1000) as f32
                / 20000.0;
            (0.3 + 0.1 * (seed % 3) as f32) * (-r2 / 30.0).exp() + tex
        })
        .collect()
}

fn write(dir: &Path, name: &str, data: Vec<f32>, dims: [usize; 3]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    write_volume(
        &p,
        &Volume {
            dims,
            data,
            affine: affine(2.0),
        },
        "test",
    )
    .unwrap();
    p
}

fn set(dir: &Path, seeds: std::ops::Range<u64>) -> Vec<Vec<f32>> {
    seeds
        .map(|s| {
            let v = volume(s, DIMS);
            write(dir, &format!("seed-{s:06}.nii.gz"), v.clone(), DIMS);
            v
        })
        .collect()
}

fn evaluate(args: &[&str]) -> std::process::Output {
    let mut all = vec!["evaluate"];
    all.extend_from_slice(args);
    all.extend_from_slice(&WINDOW);
    run(&all)
}

fn mean_ms_ssim(a: &[Vec<f32>], b: &[Vec<f32>], within: bool) -> f64 {
    let p = SsimParams {
        kernel_size: [3; 3],
        ..SsimParams::default()
    };
    let shape = [1, DIMS[0], DIMS[1], DIMS[2]];
    let mut v = Vec::new();
    for (i, x) in a.iter().enumerate() {
        for (j, y) in b.iter().enumerate() {
            if !within || i < j {
                let r = ms_ssim(
                    &MVolume::new(shape, x).unwrap(),
                    &MVolume::new(shape, y).unwrap(),
                    &p,
                    &[0.4, 0.6],
                )
                .unwrap();
                v.push(r.ms_ssim);
            }
        }
    }
    v.iter().sum::<f64>() / v.len() as f64
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn close(got: &serde_json::Value, want: f64) {
    let g = got
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {got}"));
    assert!(
        (g - want).abs() <= 1e-12 * want.abs().max(1.0),
        "{g} vs {want}"
    );
}

#[test]
fn report_table_sheet_and_lazy_blocks() {
    let t = tempfile::tempdir().unwrap();
    let samples = set(&t.path().join("s"), 0..4);
    let real = set(&t.path().join("r"), 10..13);
    std::fs::write(t.path().join("s/manifest.jsonl"), "{}\n").unwrap(); // ignored: not NIfTI
    let (json, sheet) = (t.path().join("r.json"), t.path().join("sheet.png"));
    let (s, r, j, sh) = (
        t.path().join("s"),
        t.path().join("r"),
        json.clone(),
        sheet.clone(),
    );
    let o = evaluate(&[
        "--threads",
        "2",
        s.to_str().unwrap(),
        "--real",
        r.to_str().unwrap(),
        "--json",
        j.to_str().unwrap(),
        "--sheet",
        sh.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("sample-sample (diversity)") && table.contains("real-sample"),
        "{table}"
    );
    let rep = report(&json);
    assert_eq!(rep["samples"]["count"], 4);
    assert_eq!(rep["sample_diversity"]["pairs"], 6);
    assert_eq!(rep["real_diversity"]["pairs"], 3);
    assert_eq!(rep["real_vs_sample"]["pairs"], 12);
    close(
        &rep["sample_diversity"]["ms_ssim_mean"],
        mean_ms_ssim(&samples, &samples, true),
    );
    close(
        &rep["real_vs_sample"]["ms_ssim_mean"],
        mean_ms_ssim(&real, &samples, false),
    );
    assert!(rep["mmd_histogram"].is_number(), "{rep}");
    assert_eq!(
        rep["samples"]["spacing_mm"],
        serde_json::json!([2.0, 2.0, 2.0])
    );

    // the sheet: 4 rows, at least 512 px wide and 3 px per mm (6 px per 2 mm voxel)
    let png = std::fs::read(&sheet).unwrap();
    let (w, h) = (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    );
    assert!(
        w >= 512 && w as usize >= 6 * (2 * DIMS[0] + DIMS[1]),
        "{w} x {h}"
    );
    assert!(h as usize >= 4 * 6 * DIMS[1], "{w} x {h}");

    // memory for one volume per block: every volume is read again per block, same numbers
    let json1 = t.path().join("r1.json");
    let o = evaluate(&[
        "--threads",
        "1",
        "--max-memory",
        "220K",
        s.to_str().unwrap(),
        "--real",
        r.to_str().unwrap(),
        "--json",
        json1.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("memory: up to 2 volumes"), "{table}");
    let rep1 = report(&json1);
    for key in [
        "sample_diversity",
        "real_diversity",
        "real_vs_sample",
        "mmd_histogram",
    ] {
        assert_eq!(rep1[key], rep[key], "{key}");
    }
}

#[test]
fn reconstructions_through_a_blob_with_an_encoder() {
    let t = tempfile::tempdir().unwrap();
    let samples = t.path().join("s");
    set(&samples, 0..2);
    let real = set(&t.path().join("r"), 5..7);
    let mut cfg = ldm_test_support::fixture_config();
    cfg.encoder = Some(ldm_test_support::fixture_encoder());
    let blob = t.path().join("enc.blob");
    ldm_test_support::write_fixture_blob(&blob, &cfg);
    let json = t.path().join("r.json");
    let r = t.path().join("r");
    let o = evaluate(&[
        samples.to_str().unwrap(),
        "--real",
        r.to_str().unwrap(),
        "--model",
        blob.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rep = report(&json);
    assert_eq!(rep["reconstruction"]["volumes"], 2);
    // the same numbers from the trainer's autoencoder and ldm-metrics directly
    let b = ldm_weights::Blob::open(&blob).unwrap();
    let mut store = ldm_trainer::params::ParamStore::new();
    let ae = ldm_trainer::models::autoencoder::AutoencoderKL::new(
        &mut store,
        cfg.encoder.as_ref().unwrap(),
        cfg.decoder.as_ref().unwrap(),
    )
    .unwrap();
    ldm_trainer::export::load_from_blob(&mut store, &b).unwrap();
    let p = SsimParams {
        kernel_size: [3; 3],
        ..SsimParams::default()
    };
    let mut l1 = 0.0;
    for v in &real {
        let y = ldm_trainer::train::validation::reconstruct(&ae, &store.data, v, DIMS).unwrap();
        l1 += ldm_trainer::train::validation::compare(v, &y, DIMS, &p, None)
            .unwrap()
            .l1
            / 2.0;
    }
    close(&rep["reconstruction"]["mean"]["l1"], l1);
    assert!(rep["reconstruction"]["mean"]["ms_ssim"].is_number());

    // the shipped-style blob without an encoder is refused by name
    cfg.encoder = None;
    let noenc = t.path().join("noenc.blob");
    ldm_test_support::write_fixture_blob(&noenc, &cfg);
    let o = evaluate(&[
        samples.to_str().unwrap(),
        "--real",
        r.to_str().unwrap(),
        "--model",
        noenc.to_str().unwrap(),
    ]);
    assert_one_line_error(&o, &["noenc.blob", "no encoder", "--include-encoder"]);
}

#[test]
fn fid_of_feature_files() {
    let t = tempfile::tempdir().unwrap();
    let s = t.path().join("s");
    set(&s, 0..2);
    let fr: Vec<f32> = (0..30).map(|i| ((i * 7) % 11) as f32 / 3.0).collect();
    let ff: Vec<f32> = (0..24).map(|i| ((i * 5) % 13) as f32 / 4.0).collect();
    let (pr, pf) = (t.path().join("real.npy"), t.path().join("fake.npy"));
    ldm_test_support::write_npy(&pr, &[10, 3], &fr);
    ldm_test_support::write_npy(&pf, &[8, 3], &ff);
    let json = t.path().join("f.json");
    let o = evaluate(&[
        s.to_str().unwrap(),
        "--features-real",
        pr.to_str().unwrap(),
        "--features-fake",
        pf.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = ldm_metrics::fid::fid(
        &ldm_metrics::mmd::Rows::new(8, 3, &ff).unwrap(),
        &ldm_metrics::mmd::Rows::new(10, 3, &fr).unwrap(),
    )
    .unwrap();
    close(&report(&json)["fid"]["fid"], want);
    let o = evaluate(&[s.to_str().unwrap(), "--features-real", pr.to_str().unwrap()]);
    assert_one_line_error(&o, &["--features-fake"]);
}

/// Runs evaluate on `samples` with --json and --sheet; it must fail with one line naming
/// `needles`, and leave neither output behind.
fn fails_cleanly(t: &Path, samples: &Path, extra: &[&str], needles: &[&str]) {
    let (json, sheet) = (t.join("out.json"), t.join("out.png"));
    let mut args = vec![
        samples.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--sheet",
        sheet.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = evaluate(&args);
    assert_one_line_error(&o, needles);
    assert!(!json.exists() && !sheet.exists(), "an output was written");
    let left: Vec<_> = std::fs::read_dir(t)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn bad_inputs_are_one_line_errors_naming_the_file() {
    let t = tempfile::tempdir().unwrap();
    let t = t.path();
    // mismatched shapes
    let s = t.join("mixed");
    set(&s, 0..2);
    write(
        &s,
        "seed-000009.nii.gz",
        volume(9, [16, 20, 18]),
        [16, 20, 18],
    );
    fails_cleanly(
        t,
        &s,
        &[],
        &["seed-000009.nii.gz", "[16, 20, 18]", "differs"],
    );
    // a real folder of another shape
    let r = t.join("real-other");
    write(&r, "r.nii", volume(1, [16, 16, 16]), [16, 16, 16]);
    let good = t.join("good");
    set(&good, 0..2);
    fails_cleanly(
        t,
        &good,
        &["--real", r.to_str().unwrap()],
        &["r.nii", "differs"],
    );
    // an empty folder (other files do not count)
    let e = t.join("empty");
    std::fs::create_dir_all(&e).unwrap();
    std::fs::write(e.join("notes.txt"), "x").unwrap();
    fails_cleanly(t, &e, &[], &["empty", "no .nii or .nii.gz files"]);
    // a file named .nii that is not NIfTI
    let n = t.join("notnifti");
    set(&n, 0..2);
    std::fs::write(
        n.join("broken.nii"),
        b"this is not a NIfTI file at all, just some text bytes",
    )
    .unwrap();
    fails_cleanly(t, &n, &[], &["broken.nii"]);
    // NaN voxels
    let nan = t.join("nan");
    set(&nan, 0..2);
    let mut v = volume(3, DIMS);
    v[100] = f32::NAN;
    write(&nan, "seed-000003.nii.gz", v, DIMS);
    fails_cleanly(t, &nan, &[], &["seed-000003.nii.gz", "NaN"]);
    // volumes too small for MS-SSIM's scales: MONAI's message and the way out
    let o = run(&["evaluate", good.to_str().unwrap()]);
    assert_one_line_error(
        &o,
        &["the image height must be larger than 160", "--kernel-size"],
    );
}
