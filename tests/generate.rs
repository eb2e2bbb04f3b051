//! End-to-end tests of `brats-ldm generate` on a blob built from the MONAI fixture checkpoints:
//! NIfTI header fields read back with the `nifti` crate, byte-identical reruns, disjoint shards,
//! `--init-noise` parity with MONAI's bundle sampler, resume after a kill, and one-line errors.

mod generate_support;

use generate_support::*;
use ldm_test_support::{read_npy, rel_l2, write_npy};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

/// Generation with the fixture networks is cheap; 2 threads match the CI machine.
const THREADS: &str = "2";

/// `brats-ldm generate --model MODEL --out OUT EXTRA...`, whatever its outcome.
fn try_generate(model: &str, out: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["generate", "--model", model, "--out", out];
    args.extend_from_slice(extra);
    run(&args)
}

/// A generation that must succeed, on the CI machine's thread count unless `extra` says otherwise.
fn generate(model: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["--threads", THREADS];
    args.extend_from_slice(extra);
    let o = try_generate(model.to_str().unwrap(), out.to_str().unwrap(), &args);
    assert!(o.status.success(), "generate {extra:?} failed: {}", stderr(&o));
    o
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

fn manifest_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn nifti_header_and_data_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_blob(tmp.path());
    let checksum = format!(
        "{:016x}",
        ldm_weights::Blob::open(&model).unwrap().checksum()
    );
    let out = tmp.path().join("out");
    generate(
        &model,
        &out,
        &["--count", "2", "--seed", "5", "--steps", "3", "--preview"],
    );
    assert_eq!(
        names_in(&out),
        [
            "manifest.jsonl",
            "seed-000005.nii.gz",
            "seed-000005.png",
            "seed-000006.nii.gz",
            "seed-000006.png"
        ]
        .into_iter()
        .map(String::from)
        .collect()
    );

    let path = out.join("seed-000005.nii.gz");
    let h = nifti::NiftiHeader::from_file(&path).unwrap();
    assert_eq!(h.sizeof_hdr, 348);
    assert_eq!(&h.magic, b"n+1\0");
    assert_eq!(h.dim, [3, 32, 32, 16, 1, 1, 1, 1]);
    assert_eq!(h.datatype, 16, "float32");
    assert_eq!(h.bitpix, 32);
    assert_eq!(h.pixdim[0], 1.0, "qfac");
    assert_eq!(&h.pixdim[1..4], &[1.1f32, 1.1, 1.1]);
    assert_eq!(h.vox_offset, 352.0);
    assert_eq!(h.xyzt_units, 2, "mm");
    assert_eq!((h.qform_code, h.sform_code), (2, 2));
    // RAS: identity rotation, 1.1 mm on the diagonal, centre voxel at the world origin.
    assert_eq!([h.quatern_b, h.quatern_c, h.quatern_d], [0.0, 0.0, 0.0]);
    let centre = |n: f32| -1.1f32 * (n - 1.0) / 2.0;
    assert_eq!(h.srow_x, [1.1, 0.0, 0.0, centre(32.0)]);
    assert_eq!(h.srow_y, [0.0, 1.1, 0.0, centre(32.0)]);
    assert_eq!(h.srow_z, [0.0, 0.0, 1.1, centre(16.0)]);
    assert_eq!(
        [h.quatern_x, h.quatern_y, h.quatern_z],
        [h.srow_x[3], h.srow_y[3], h.srow_z[3]]
    );
    let descrip = String::from_utf8_lossy(&h.descrip)
        .trim_end_matches('\0')
        .to_string();
    assert_eq!(descrip, format!("seed=5 model={checksum} ddim3"));

    // The voxels are the .npy output of the same seed, transposed to NIfTI's i-fastest order.
    let npy_dir = tmp.path().join("npy");
    generate(
        &model,
        &npy_dir,
        &["--seed", "5", "--steps", "3", "--format", "npy"],
    );
    let (shape, c_order) = read_npy(&npy_dir.join("seed-000005.npy"));
    assert_eq!(shape, vec![1, 32, 32, 16]);
    let raw = gunzip(&path);
    assert_eq!(raw.len(), 352 + 4 * 32 * 32 * 16);
    let nii: Vec<f32> = raw[352..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    for (i, j, k) in [
        (0, 0, 0),
        (31, 0, 0),
        (0, 31, 0),
        (0, 0, 15),
        (7, 19, 3),
        (31, 31, 15),
    ] {
        assert_eq!(
            nii[i + 32 * j + 32 * 32 * k],
            c_order[i * 32 * 16 + j * 16 + k],
            "voxel {i},{j},{k}"
        );
    }
    assert!(nii.iter().all(|v| v.is_finite()));
    let spread = c_order.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(spread > 0.0, "an all-zero volume");

    // The same voxels in the uncompressed format.
    let nii_dir = tmp.path().join("nii");
    generate(
        &model,
        &nii_dir,
        &["--seed", "5", "--steps", "3", "--format", "nii"],
    );
    assert_eq!(std::fs::read(nii_dir.join("seed-000005.nii")).unwrap(), raw);

    let preview = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(out.join("seed-000006.png")).unwrap(),
    ));
    let reader = preview.read_info().unwrap();
    assert_eq!(
        (reader.info().width, reader.info().height),
        (32 + 32 + 32 + 8, 32)
    );

    let lines = manifest_lines(&out.join("manifest.jsonl"));
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["file"], "seed-000005.nii.gz");
    assert_eq!(lines[0]["seed"], 5);
    assert_eq!(lines[1]["seed"], 6);
    assert_eq!(lines[0]["model_checksum"], checksum.as_str());
    assert_eq!(lines[0]["sampler"], "ddim");
    assert_eq!(lines[0]["steps"], 3);
    assert_eq!(lines[0]["device"], "cpu");
    assert!(lines[0]["seconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn orientation_code_and_spacing_become_qform_and_sform() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = fixture_config();
    cfg.geometry.orientation = "LPI".into();
    cfg.geometry.spacing_mm = [1.0, 1.5, 2.0];
    let model = fixture_blob_with(tmp.path(), "lpi.blob", cfg);
    let out = tmp.path().join("out");
    generate(&model, &out, &["--steps", "1", "--format", "nii"]);
    let h = nifti::NiftiHeader::from_file(out.join("seed-000000.nii")).unwrap();
    assert_eq!(&h.pixdim[1..4], &[1.0, 1.5, 2.0]);
    assert_eq!((h.qform_code, h.sform_code), (2, 2));
    // i -> Left, j -> Posterior, k -> Inferior, centre voxel at the origin
    assert_eq!(h.srow_x, [-1.0, 0.0, 0.0, 15.5]);
    assert_eq!(h.srow_y, [0.0, -1.5, 0.0, 1.5 * 15.5]);
    assert_eq!(h.srow_z, [0.0, 0.0, -2.0, 15.0]);
    // The qform, rebuilt as nifti1.h defines it, is the same affine.
    let (b, c, d) = (h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64);
    let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
    let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
    let r = [
        [
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            2.0 * (b * d + a * c),
        ],
        [
            2.0 * (b * c + a * d),
            a * a + c * c - b * b - d * d,
            2.0 * (c * d - a * b),
        ],
        [
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            a * a + d * d - c * c - b * b,
        ],
    ];
    let srow = [h.srow_x, h.srow_y, h.srow_z];
    let q_offset = [h.quatern_x, h.quatern_y, h.quatern_z];
    for row in 0..3 {
        for col in 0..3 {
            let zoom = h.pixdim[col + 1] as f64 * if col == 2 { qfac } else { 1.0 };
            let q = r[row][col] * zoom;
            assert!(
                (q - srow[row][col] as f64).abs() < 1e-6,
                "row {row} col {col}: qform {q} sform {}",
                srow[row][col]
            );
        }
        assert_eq!(q_offset[row], srow[row][3]);
    }
}

#[test]
fn same_seed_gives_byte_identical_files_at_any_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_blob(tmp.path());
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    generate(&model, &a, &["--seed", "11", "--steps", "4"]);
    let o = try_generate(model.to_str().unwrap(), b.to_str().unwrap(), &["--seed", "11", "--steps", "4", "--threads", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let fa = std::fs::read(a.join("seed-000011.nii.gz")).unwrap();
    assert_eq!(fa, std::fs::read(b.join("seed-000011.nii.gz")).unwrap());
    // and a different seed gives a different volume
    generate(&model, &a, &["--seed", "12", "--steps", "4"]);
    assert_ne!(
        gunzip(&a.join("seed-000011.nii.gz"))[352..],
        gunzip(&a.join("seed-000012.nii.gz"))[352..]
    );
}

#[test]
fn shards_partition_the_seed_range() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_blob(tmp.path());
    let out = tmp.path().join("out");
    let mut seen = BTreeSet::new();
    for i in 0..3 {
        let shard = format!("{i}/3");
        generate(
            &model,
            &out,
            &[
                "--count", "7", "--seed", "100", "--steps", "1", "--shard", &shard, "--format",
                "nii",
            ],
        );
        let lines = manifest_lines(&out.join(format!("manifest.shard-{i}-of-3.jsonl")));
        assert!(!lines.is_empty());
        for l in lines {
            let seed = l["seed"].as_u64().unwrap();
            assert!(seen.insert(seed), "seed {seed} generated by two shards");
        }
    }
    assert_eq!(seen, (100..107).collect());
    let volumes: BTreeSet<String> = names_in(&out)
        .into_iter()
        .filter(|n| n.ends_with(".nii"))
        .collect();
    assert_eq!(
        volumes,
        (100..107).map(|s| format!("seed-{s:06}.nii")).collect()
    );
}

#[test]
fn init_noise_reproduces_the_monai_bundle_sampler() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_blob(tmp.path());
    let out = tmp.path().join("out");
    let noise = fixtures().join("pipeline/noise.npy");
    generate(
        &model,
        &out,
        &["--init-noise", noise.to_str().unwrap(), "--format", "npy"],
    );
    let (shape, ours) = read_npy(&out.join("init-noise.npy"));
    let (ref_shape, reference) = read_npy(&fixtures().join("pipeline/bundle_image.npy"));
    assert_eq!(shape, ref_shape[1..].to_vec());
    let err = rel_l2(&ours, &reference);
    eprintln!("--init-noise vs MONAI bundle_image.npy: relative L2 {err:.3e}");
    assert!(err < 1e-4, "relative L2 {err}");
    let lines = manifest_lines(&out.join("manifest.jsonl"));
    assert_eq!(lines[0]["seed"], serde_json::Value::Null);
    assert_eq!(lines[0]["steps"], 50);
    assert!(lines[0]["init_noise"]
        .as_str()
        .unwrap()
        .ends_with("noise.npy"));

    // The same through `brats-ldm convert` with the fixtures' architecture file.
    let converted = tmp.path().join("converted.blob");
    let f = fixtures();
    let o = run(&[
        "convert",
        "--autoencoder",
        f.join("autoencoder/autoencoder.safetensors")
            .to_str()
            .unwrap(),
        "--unet",
        f.join("unet/unet.safetensors").to_str().unwrap(),
        "--config",
        f.join("../configs/fixture_networks.json").to_str().unwrap(),
        "--out",
        converted.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "convert failed: {}", stderr(&o));
    let out2 = tmp.path().join("out2");
    generate(
        &converted,
        &out2,
        &["--init-noise", noise.to_str().unwrap(), "--format", "npy"],
    );
    let err2 = rel_l2(&read_npy(&out2.join("init-noise.npy")).1, &reference);
    eprintln!("--init-noise with a converted blob: relative L2 {err2:.3e}");
    assert!(err2 < 1e-4, "relative L2 {err2}");
}

/// With a stochastic sampler `--init-noise` draws its step noise from `--seed`: seed 5's own
/// initial noise with `--seed 5` gives seed 5's volume, `--seed 6` another one, and the seed is
/// recorded, so a rerun with another seed does not take the old file for its own.
#[test]
fn init_noise_with_a_stochastic_sampler_takes_step_noise_from_the_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_blob(tmp.path());
    let m = model.to_str().unwrap();
    let sampler = ["--sampler", "ddim", "--eta", "1", "--steps", "4", "--format", "npy"];
    fn with<'a>(extra: &[&'a str], sampler: &[&'a str]) -> Vec<&'a str> {
        [extra, sampler].concat()
    }
    let by_seed = tmp.path().join("by-seed");
    generate(&model, &by_seed, &with(&["--seed", "5"], &sampler));
    let (_, seed5) = read_npy(&by_seed.join("seed-000005.npy"));

    let latent = fixture_config().latent_shape.map(|d| d as usize);
    let mut noise = vec![0f32; latent.iter().product()];
    ldm_runtime::philox_normal(5, 0, &mut noise);
    let z = tmp.path().join("z5.npy");
    write_npy(&z, &latent, &noise);
    let z = z.to_str().unwrap();

    let same = tmp.path().join("same");
    generate(&model, &same, &with(&["--init-noise", z, "--seed", "5"], &sampler));
    assert_eq!(read_npy(&same.join("init-z5.npy")).1, seed5);

    let other = tmp.path().join("other");
    generate(&model, &other, &with(&["--init-noise", z, "--seed", "6"], &sampler));
    assert_ne!(read_npy(&other.join("init-z5.npy")).1, seed5);
    assert_eq!(manifest_lines(&other.join("manifest.jsonl"))[0]["seed"], 6);
    let o = try_generate(m, other.to_str().unwrap(), &with(&["--init-noise", z, "--seed", "5"], &sampler));
    assert_one_line_error(&o, &["init-z5.npy", "other settings"]);

    // deterministic DDIM: no step noise, so no seed is recorded
    let ddim = tmp.path().join("ddim");
    generate(&model, &ddim, &["--init-noise", z, "--seed", "6", "--steps", "4", "--format", "npy"]);
    assert_eq!(manifest_lines(&ddim.join("manifest.jsonl"))[0]["seed"], serde_json::Value::Null);
}

#[test]
fn a_killed_batch_resumes_to_the_same_files() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_blob(tmp.path());
    let out = tmp.path().join("out");
    // Small steps keep the whole test to a few seconds; 24 volumes leave time to kill mid-way.
    const N: usize = 24;
    let count = N.to_string();
    let args = |out: &Path| -> Vec<String> {
        [
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--count",
            &count,
        ]
        .into_iter()
        .chain(["--steps", "4", "--threads", THREADS])
        .map(String::from)
        .collect()
    };
    let mut child = bin()
        .args(args(&out))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if out.join("seed-000000.nii.gz").exists() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no output after 120 s"
        );
        assert!(child.try_wait().unwrap().is_none(), "generate exited early");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let after_kill = names_in(&out);
    let finished = after_kill
        .iter()
        .filter(|n| n.ends_with(".nii.gz") && !n.starts_with('.'))
        .count();
    assert!(finished < N, "the batch finished before it could be killed");
    // Whatever carries a final name is complete.
    for n in after_kill
        .iter()
        .filter(|n| n.ends_with(".nii.gz") && !n.starts_with('.'))
    {
        assert_eq!(gunzip(&out.join(n)).len(), 352 + 4 * 32 * 32 * 16, "{n}");
    }
    // A kill during a write leaves a temporary file like this one; the rerun must remove it.
    std::fs::write(out.join(".seed-000005.nii.gz.4242.tmp"), b"partial").unwrap();

    let o = bin().args(args(&out)).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let expected: BTreeSet<String> = (0..N)
        .map(|s| format!("seed-{s:06}.nii.gz"))
        .chain(std::iter::once("manifest.jsonl".to_string()))
        .collect();
    assert_eq!(
        names_in(&out),
        expected,
        "partial or missing files after the rerun"
    );
    let lines = manifest_lines(&out.join("manifest.jsonl"));
    let recorded: BTreeSet<String> = lines
        .iter()
        .map(|l| l["file"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(recorded.len(), N);
    assert_eq!(lines.len(), N, "a file recorded twice");

    // The resumed batch equals an uninterrupted one.
    let clean = tmp.path().join("clean");
    for s in ["0", "5", "23"] {
        generate(&model, &clean, &["--seed", s, "--steps", "4"]);
        let name = format!("seed-{:06}.nii.gz", s.parse::<u64>().unwrap());
        assert_eq!(
            std::fs::read(clean.join(&name)).unwrap(),
            std::fs::read(out.join(&name)).unwrap(),
            "{name}"
        );
    }

    // A third run finds everything complete and writes nothing.
    let before = std::fs::metadata(out.join("seed-000003.nii.gz"))
        .unwrap()
        .modified()
        .unwrap();
    let o = bin().args(args(&out)).output().unwrap();
    assert!(o.status.success());
    assert_eq!(
        std::fs::metadata(out.join("seed-000003.nii.gz"))
            .unwrap()
            .modified()
            .unwrap(),
        before
    );
    assert_eq!(manifest_lines(&out.join("manifest.jsonl")).len(), N);
}

#[test]
fn existing_outputs_are_checked_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_blob(tmp.path());
    let out = tmp.path().join("out");
    generate(&model, &out, &["--seed", "1", "--steps", "2"]);
    let path = out.join("seed-000001.nii.gz");
    let good = std::fs::read(&path).unwrap();
    // truncated: regenerated
    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    generate(&model, &out, &["--seed", "1", "--steps", "2"]);
    assert_eq!(std::fs::read(&path).unwrap(), good);
    // made with other settings: refused, untouched
    let o = try_generate(model.to_str().unwrap(), out.to_str().unwrap(), &["--seed", "1", "--steps", "3"]);
    assert_one_line_error(&o, &["seed-000001.nii.gz", "other settings"]);
    assert_eq!(std::fs::read(&path).unwrap(), good);

    // .npy has no description field: the manifest's record of the settings guards it instead
    generate(
        &model,
        &out,
        &["--seed", "2", "--steps", "2", "--format", "npy"],
    );
    let o = try_generate(model.to_str().unwrap(), out.to_str().unwrap(), &["--seed", "2", "--steps", "3", "--format", "npy"]);
    assert_one_line_error(&o, &["seed-000002.npy", "records other settings"]);
}

#[test]
fn bad_input_gives_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_blob(tmp.path());
    let m = model.to_str().unwrap();
    let out = tmp.path().join("out");
    let o_ = out.to_str().unwrap();

    let o = try_generate("/nonexistent/model.blob", o_, &[]);
    assert_one_line_error(&o, &["/nonexistent/model.blob"]);

    let mut bytes = std::fs::read(&model).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    let corrupt = tmp.path().join("corrupt.blob");
    std::fs::write(&corrupt, &bytes).unwrap();
    let o = try_generate(corrupt.to_str().unwrap(), o_, &[]);
    assert_one_line_error(&o, &["corrupt.blob"]);
    let truncated = tmp.path().join("truncated.blob");
    std::fs::write(&truncated, &bytes[..100]).unwrap();
    let o = try_generate(truncated.to_str().unwrap(), o_, &[]);
    assert_one_line_error(&o, &["truncated.blob"]);

    // root ignores permission bits, so make the directory impossible: a path through a file
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let unwritable = file.join("out");
    let o = try_generate(m, unwritable.to_str().unwrap(), &[]);
    assert_one_line_error(&o, &["cannot write to output directory", "a-file"]);

    let o = try_generate(m, o_, &["--latent-shape", "8,6,8,4"]);
    assert_one_line_error(&o, &["8,6,8,4", "divisible by 4"]);
    let o = try_generate(m, o_, &["--latent-shape", "4,8,8,4"]);
    assert_one_line_error(&o, &["channels"]);
    let o = try_generate(m, o_, &["--latent-shape", "8,8,8"]);
    assert_one_line_error(&o, &["--latent-shape"]);

    for spec in ["3/2", "1/0", "x", "1-2"] {
        let o = try_generate(m, o_, &["--shard", spec]);
        assert_one_line_error(&o, &["--shard", spec]);
    }

    let o = try_generate(m, o_, &["--format", "mha"]);
    assert_one_line_error(&o, &["--format"]);
    let o = try_generate(m, o_, &["--sampler", "ddpm", "--eta", "0.5"]);
    assert_one_line_error(&o, &["--eta"]);
    let o = try_generate(m, o_, &["--init-noise", m]);
    assert_one_line_error(&o, &["fixture.blob", ".npy"]);
    let o = try_generate(m, o_, &["--sampler", "ddpm", "--steps", "1001"]);
    assert_one_line_error(&o, &["ddpm", "1000"]);
    let o = try_generate(m, o_, &["--sampler", "pndm", "--steps", "3"]);
    assert_one_line_error(&o, &["pndm", "at least 4 steps"]);
    let o = try_generate(m, o_, &["--sampler", "euler"]);
    assert_one_line_error(&o, &["euler", "pndm"]);
    let o = try_generate(m, o_, &["--device", "tpu"]);
    assert_one_line_error(&o, &["--device"]);

    // nothing was written by any of these
    assert!(
        !out.exists() || names_in(&out).is_empty(),
        "{:?}",
        names_in(&out)
    );
}

#[test]
fn model_from_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_blob(tmp.path());
    let out = tmp.path().join("out");
    let o = bin()
        .env("BRATS_LDM_MODEL", &model)
        .args([
            "generate",
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "1",
            "--threads",
            THREADS,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("seed-000000.nii.gz").is_file());
}
