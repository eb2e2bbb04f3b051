//! Batch jobs that share an output folder, and the run's memory and output safety checks, end
//! to end on the small fixture model: concurrent `generate` runs with overlapping seeds make each
//! volume once with one manifest line; a damaged `.nii.gz` is regenerated on resume; a volume
//! with non-finite values is not written; the plan is printed and refused when it cannot fit;
//! `convert --out` naming an input is refused; `inspect` escapes strings from the blob.

mod generate_support;

use generate_support::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;

fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// Every line of every manifest in `dir`, as (manifest, file) pairs.
fn manifest_files(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in names_in(dir) {
        if name.starts_with("manifest") && name.ends_with(".jsonl") {
            for line in std::fs::read_to_string(dir.join(&name)).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                out.push((name.clone(), v["file"].as_str().unwrap().to_string()));
            }
        }
    }
    out
}

#[test]
fn concurrent_runs_make_each_seed_once_with_one_manifest_line() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_blob(tmp.path());
    let out = tmp.path().join("out");
    let m = model.to_str().unwrap();
    let o = out.to_str().unwrap();
    // seeds 0..12, 0..16 and shard 1/2 of 0..16 (8..16): the first two start on the same seed
    // at the same time, and every seed is wanted two or three times
    let runs: [&[&str]; 3] = [
        &["--seed", "0", "--count", "12"],
        &["--seed", "0", "--count", "16"],
        &["--seed", "0", "--count", "16", "--shard", "1/2"],
    ];
    let children: Vec<_> = runs
        .iter()
        .map(|extra| {
            bin()
                .args([
                    "generate",
                    "--model",
                    m,
                    "--out",
                    o,
                    "--steps",
                    "2",
                    "--threads",
                    "1",
                ])
                .args(*extra)
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut wrote = BTreeMap::<String, usize>::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{err}");
        for line in err.lines().filter(|l| l.starts_with("wrote ")) {
            let file = Path::new(line.split_whitespace().nth(1).unwrap());
            *wrote
                .entry(file.file_name().unwrap().to_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    let expected: BTreeSet<String> = (0..16).map(|s| format!("seed-{s:06}.nii.gz")).collect();
    assert_eq!(wrote.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert!(
        wrote.values().all(|&n| n == 1),
        "a seed was generated twice: {wrote:?}"
    );
    let lines = manifest_files(&out);
    let recorded: BTreeSet<String> = lines.iter().map(|(_, f)| f.clone()).collect();
    assert_eq!(recorded, expected);
    assert_eq!(lines.len(), 16, "duplicate manifest lines: {lines:?}");
    // nothing else is left: no claim, no temporary file
    let left: Vec<String> = names_in(&out)
        .into_iter()
        .filter(|n| !expected.contains(n) && !n.starts_with("manifest"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_stale_claim_is_taken_over_and_a_live_one_is_respected() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_blob(tmp.path());
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let claim = |pid: u32, start: u64, host: &str| {
        format!(
            "brats-ldm claim\nhost={}\nboot={}\npid={pid}\nstart={start}\ncreated=0\ntoken=t{pid}\n",
            host.trim(),
            boot.trim()
        )
    };
    // seed 0: a dead process of this host; seed 1: a live one (this test process); seed 2: another host
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    dead.wait().unwrap();
    std::fs::write(
        out.join(".seed-000000.nii.gz.claim"),
        claim(dead.id(), 1, &host),
    )
    .unwrap();
    std::fs::write(
        out.join(".seed-000001.nii.gz.claim"),
        claim(std::process::id(), 0, &host),
    )
    .unwrap();
    std::fs::write(
        out.join(".seed-000002.nii.gz.claim"),
        claim(1, 1, "elsewhere"),
    )
    .unwrap();
    let o = bin()
        .args([
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(["--count", "3", "--steps", "1", "--threads", "1"])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("taking over the claim"), "{err}");
    assert!(err.contains("2 being made by other runs"), "{err}");
    assert!(out.join("seed-000000.nii.gz").is_file());
    assert!(!out.join(".seed-000000.nii.gz.claim").exists());
    for s in [1, 2] {
        assert!(!out.join(format!("seed-00000{s}.nii.gz")).exists());
        assert!(out.join(format!(".seed-00000{s}.nii.gz.claim")).exists());
    }
}

#[test]
fn a_damaged_gzip_volume_is_regenerated_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_blob(tmp.path());
    let out = tmp.path().join("out");
    let args = |out: &Path| {
        let mut c = bin();
        c.args([
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(["--seed", "3", "--steps", "2", "--threads", "1"]);
        c
    };
    assert!(args(&out).output().unwrap().status.success());
    let path = out.join("seed-000003.nii.gz");
    let good = std::fs::read(&path).unwrap();
    // one flipped byte in the middle of the deflate data: size, ISIZE and NIfTI header intact
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    std::fs::write(&path, &bad).unwrap();
    let o = args(&out).output().unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("incomplete") && err.contains("regenerating"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), good);
    assert_eq!(manifest_files(&out).len(), 1);
}

#[test]
fn non_finite_output_is_not_written_and_fails_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    // Latents divided by a scale factor of 1e-38 overflow f32 in the decoder.
    let mut cfg = fixture_config();
    cfg.scale_factor = 1e-38;
    let model = fixture_blob_with(tmp.path(), "overflow.blob", cfg);
    let out = tmp.path().join("new").join("out");
    let o = run(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--count",
        "2",
        "--steps",
        "1",
        "--threads",
        "1",
        "--quiet",
    ]);
    assert_one_line_error(
        &o,
        &[
            "2 of 2 volumes",
            "non-finite",
            "seed-000000.nii.gz, seed-000001.nii.gz",
        ],
    );
    // no volume, no manifest, and the folders this run created are gone again
    assert!(!tmp.path().join("new").exists(), "{:?}", names_in(&out));
}

#[test]
fn init_noise_outside_a_gaussian_range_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_blob(tmp.path());
    let noise = tmp.path().join("noise.npy");
    let mut values = vec![0.5f32; 8 * 8 * 8 * 4];
    values[77] = 1e37;
    ldm_test_support::write_npy(&noise, &[1, 8, 8, 8, 4], &values);
    let out = tmp.path().join("out");
    let o = run(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--init-noise",
        noise.to_str().unwrap(),
    ]);
    assert_one_line_error(&o, &["noise.npy", "value 77", "1e37"]);
    assert!(!out.exists());
}

#[test]
fn the_plan_is_printed_and_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_blob(tmp.path());
    let m = model.to_str().unwrap();
    let out = tmp.path().join("out");
    let o_ = out.to_str().unwrap();
    let o = run(&[
        "generate",
        "--model",
        m,
        "--out",
        o_,
        "--steps",
        "1",
        "--threads",
        "1",
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let plan = err
        .lines()
        .find(|l| l.starts_with("plan: "))
        .unwrap_or_else(|| panic!("{err}"));
    for part in ["weights", "arena", "workspaces", "state", "available"] {
        assert!(plan.contains(part), "{plan}");
    }

    // a bound below what even slab decoding needs: refused with both numbers
    let o = run(&[
        "generate",
        "--model",
        m,
        "--out",
        o_,
        "--seed",
        "9",
        "--max-memory",
        "1K",
    ]);
    assert_one_line_error(&o, &["max_memory is 1024 bytes", "needs"]);
    let o = run(&["bench", "--model", m, "--max-memory", "lots"]);
    assert_one_line_error(&o, &["--max-memory", "lots"]);
    // a latent far larger than this machine: the bytes are named, nothing is allocated
    let o = run(&[
        "generate",
        "--model",
        m,
        "--out",
        o_,
        "--seed",
        "9",
        "--latent-shape",
        "8,4096,4096,4096",
    ]);
    assert_one_line_error(&o, &["needs", "GiB", "available", "--max-memory"]);
    assert!(!out.join("seed-000009.nii.gz").exists());
}

#[test]
fn convert_refuses_an_out_that_is_an_input() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixtures().join("unet/unet.pt");
    let copy = tmp.path().join("unet.pt");
    std::fs::copy(&src, &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let config = ldm_test_support::fixtures_dir().join("configs/fixture_networks.json");
    let link = tmp.path().join("link.pt");
    std::os::unix::fs::symlink(&copy, &link).unwrap();
    let spelled = tmp.path().join(".").join("unet.pt");
    for out in [&copy, &link, &spelled] {
        let o = run(&[
            "convert",
            "--unet",
            copy.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_one_line_error(&o, &["output", "same file as the UNet input", "unet.pt"]);
    }
    assert_eq!(std::fs::read(&copy).unwrap(), before);
}

#[test]
fn inspect_escapes_strings_from_the_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = fixture_config();
    cfg.provenance.producer = "evil\x1b[2J\x1b[Hforged: ok\nchecksum: verified".into();
    let model = fixture_blob_with(tmp.path(), "evil.blob", cfg);
    let o = run(&["inspect", model.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(!text.contains('\x1b'), "{text}");
    assert!(
        text.contains("evil\\x1b[2J\\x1b[Hforged: ok\\nchecksum: verified"),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("checksum:")).count(),
        1,
        "{text}"
    );
}
