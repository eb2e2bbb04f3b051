//! Hostile and careless inputs to the CLI's readers: gzip bombs made on the fly, huge header
//! dimensions, truncated files, FIFOs, /dev/zero, `prepare` settings whose buffers would not
//! fit, and `generate`/`bench` plans beyond the machine's memory or `--max-memory`. Each must
//! end with one clear error line, a non-zero exit, no output file, and a peak resident set
//! (measured by `/usr/bin/time -f %M`, else by polling the child's VmHWM) below twice the
//! largest legitimate buffer — for a refused input that is the process's own baseline
//! (`brats-ldm --help`), since nothing sized by the input may be allocated.

mod generate_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use generate_support::fixture_blob;

/// A run must finish within this (a FIFO that blocks would hang forever).
const DEADLINE: Duration = Duration::from_secs(60);

struct Outcome {
    code: Option<i32>,
    stderr: String,
    /// Peak resident set in bytes.
    peak_rss: u64,
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_brats-ldm"))
}

fn vm_hwm(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|k| k * 1024)
}

/// Runs the CLI with `args`, killing it past `DEADLINE`, and measures its peak RSS.
fn run(args: &[&str]) -> Outcome {
    let time = Path::new("/usr/bin/time");
    let dir = tempfile::tempdir().unwrap();
    let rss_file = dir.path().join("rss");
    let mut cmd = if time.exists() {
        let mut c = Command::new(time);
        c.arg("-f").arg("%M").arg("-o").arg(&rss_file).arg(bin());
        c
    } else {
        Command::new(bin())
    };
    cmd.args(args)
        .env_remove("BRATS_LDM_MODEL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr_pipe, &mut s).unwrap();
        s
    });
    let start = Instant::now();
    let mut polled = 0u64;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if !time.exists() {
            polled = polled.max(vm_hwm(child.id()).unwrap_or(0));
        }
        if start.elapsed() > DEADLINE {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("brats-ldm {args:?} did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let stderr = reader.join().unwrap();
    let peak_rss = if time.exists() {
        let text = std::fs::read_to_string(&rss_file).unwrap();
        // GNU time prints "Command exited with non-zero status N" before the number
        let kib: u64 = text.lines().last().unwrap().trim().parse().unwrap();
        kib * 1024
    } else {
        polled
    };
    Outcome {
        code: status.code(),
        stderr,
        peak_rss,
    }
}

/// Peak RSS of a run that allocates nothing for its input.
fn baseline() -> u64 {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| run(&["--help"]).peak_rss.max(1 << 20))
}

/// One error line naming every needle, a non-zero exit, and a bounded peak RSS.
fn assert_refused(o: &Outcome, needles: &[&str], legit_bytes: u64) {
    let lines: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| !l.starts_with("plan: "))
        .collect();
    assert!(
        o.code.is_some_and(|c| c != 0),
        "expected a failure exit, got {:?}: {}",
        o.code,
        o.stderr
    );
    assert_eq!(lines.len(), 1, "expected one error line, got: {}", o.stderr);
    for n in needles {
        assert!(lines[0].contains(n), "'{n}' missing from: {}", lines[0]);
    }
    let bound = 2 * legit_bytes.max(baseline());
    eprintln!(
        "peak RSS {} KiB (bound {} KiB): {}",
        o.peak_rss >> 10,
        bound >> 10,
        lines[0]
    );
    assert!(
        o.peak_rss < bound,
        "peak RSS {} bytes, bound {bound} (baseline {}): {}",
        o.peak_rss,
        baseline(),
        lines[0]
    );
}

fn files_in(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A NIfTI-1 float32/uint8 header (RAS, 1 mm) for `dims`, with the 4-byte extension flag.
fn nifti_header(dims: [usize; 3], datatype: i16, bitpix: i16) -> Vec<u8> {
    let mut b = vec![0u8; 352];
    b[0..4].copy_from_slice(&348i32.to_le_bytes());
    let dim: [i16; 8] = [
        3,
        dims[0] as i16,
        dims[1] as i16,
        dims[2] as i16,
        1,
        1,
        1,
        1,
    ];
    for (n, v) in dim.iter().enumerate() {
        b[40 + 2 * n..42 + 2 * n].copy_from_slice(&v.to_le_bytes());
    }
    b[70..72].copy_from_slice(&datatype.to_le_bytes());
    b[72..74].copy_from_slice(&bitpix.to_le_bytes());
    for (n, v) in [1.0f32, 1.0, 1.0, 1.0].iter().enumerate() {
        b[76 + 4 * n..80 + 4 * n].copy_from_slice(&v.to_le_bytes());
    }
    b[108..112].copy_from_slice(&352f32.to_le_bytes());
    b[112..116].copy_from_slice(&1f32.to_le_bytes());
    b[254..256].copy_from_slice(&1i16.to_le_bytes()); // sform_code
    b[280..284].copy_from_slice(&1f32.to_le_bytes());
    b[300..304].copy_from_slice(&1f32.to_le_bytes());
    b[320..324].copy_from_slice(&1f32.to_le_bytes());
    b[344..348].copy_from_slice(b"n+1\0");
    b
}

/// gzip of `head`, then `noise` incompressible bytes (stored), then `zeros` zero bytes.
fn gzip_file(path: &Path, head: &[u8], noise: usize, zeros: u64) {
    let f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    e.write_all(head).unwrap();
    // xorshift64: incompressible, so the file really is about `noise` bytes long
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let junk: Vec<u8> = (0..noise)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8
        })
        .collect();
    e.write_all(&junk).unwrap();
    let block = vec![0u8; 1 << 20];
    let mut left = zeros;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        e.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    e.finish().unwrap().flush().unwrap();
}

fn prepare(data: &Path, out: &Path, extra: &[&str]) -> Outcome {
    let mut args = vec![
        "prepare",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// A small valid volume: 30x30x20 float32 at 1 mm.
fn small_volume(path: &Path) {
    let mut b = nifti_header([30, 30, 20], 16, 32);
    for i in 0..18000u32 {
        b.extend_from_slice(&((i % 97) as f32).to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn prepare_refuses_a_4_gib_nii_gz_before_inflating_it() {
    // 1024^3 float32 declared in a 4 MiB gzip (deflate could inflate 4 MiB that far).
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("bomb.nii.gz");
    gzip_file(&src, &nifti_header([1024, 1024, 1024], 16, 32), 4 << 20, 0);
    let out = tmp.path().join("out");
    let o = prepare(&src, &out, &["--max-memory", "2G"]);
    assert_refused(
        &o,
        &[
            "bomb.nii.gz",
            "needs",
            "bytes",
            "GiB",
            "source 1024x1024x1024",
        ],
        0,
    );
    assert!(files_in(&out).is_empty(), "{:?}", files_in(&out));
}

#[test]
fn prepare_refuses_a_1_gib_uint8_bomb() {
    // 1024^3 uint8 declared in a 1 MiB gzip: refused by the memory plan, nothing inflated.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("bytes.nii.gz");
    gzip_file(&src, &nifti_header([1024, 1024, 1024], 2, 8), 1 << 20, 0);
    let out = tmp.path().join("out");
    let o = prepare(&src, &out, &["--max-memory", "2G"]);
    assert_refused(&o, &["bytes.nii.gz", "needs"], 0);
    assert!(files_in(&out).is_empty());
}

#[test]
fn a_small_header_over_a_gigabyte_of_zeros_stops_at_the_declared_size() {
    // 8x8x8 float32 declared, then 1 GiB of zeros in a few-MiB gzip: reading stops 1 MiB past
    // the declared data instead of inflating the gigabyte.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tail.nii.gz");
    gzip_file(&src, &nifti_header([8, 8, 8], 16, 32), 0, 1 << 30);
    let len = std::fs::metadata(&src).unwrap().len();
    assert!(len < 8 << 20, "{len} bytes");
    let out = tmp.path().join("out");
    let o = prepare(&src, &out, &["--crop", "8,8,8"]);
    assert_refused(&o, &["tail.nii.gz", "refusing to inflate"], 0);
    assert!(files_in(&out).is_empty());
}

#[test]
fn prepare_refuses_huge_headers_and_truncated_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let huge = tmp.path().join("huge.nii");
    let mut b = nifti_header([32767, 32767, 32767], 16, 32);
    b.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&huge, &b).unwrap();
    assert_refused(
        &prepare(&huge, &out, &[]),
        &["huge.nii", "exceeds the limit of 2147483648"],
        0,
    );
    let short = tmp.path().join("short.nii");
    let mut b = nifti_header([30, 30, 20], 16, 32);
    b.extend_from_slice(&[0u8; 1000]);
    std::fs::write(&short, &b).unwrap();
    assert_refused(&prepare(&short, &out, &[]), &["short.nii", "truncated"], 0);
    let gz = tmp.path().join("cut.nii.gz");
    let mut full = nifti_header([30, 30, 20], 16, 32);
    full.extend((0..72000u32).map(|i| (i % 251) as u8));
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&full).unwrap();
    let bytes = e.finish().unwrap();
    std::fs::write(&gz, &bytes[..bytes.len() / 2]).unwrap();
    assert_refused(&prepare(&gz, &out, &[]), &["cut.nii.gz"], 0);
    assert!(files_in(&out).is_empty());
}

#[test]
fn prepare_refuses_settings_whose_buffers_would_not_fit() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("small.nii");
    small_volume(&src);
    let out = tmp.path().join("out");
    // 29 mm (first to last voxel centre) at 0.001 mm: 29001 x 29001 x 19001 voxels, 64 TB
    let o = prepare(&src, &out, &["--spacing", "0.001"]);
    assert_refused(
        &o,
        &["small.nii", "needs", "resampled 29001x29001x19001"],
        0,
    );
    let o = prepare(&src, &out, &["--crop", "100000,100000,100000"]);
    assert_refused(&o, &["--crop", "needs 8000000000000000 bytes"], 0);
    // 2048 x 2048 x 512 float32 is 8 GiB, twice that with the percentile copy
    let o = prepare(
        &src,
        &out,
        &["--crop", "2048,2048,512", "--max-memory", "8G"],
    );
    assert_refused(&o, &["--crop", "needs 17179869184 bytes (16.00 GiB)"], 0);
    assert!(files_in(&out).is_empty());
    // the same file with sane settings is prepared
    let o = prepare(&src, &out, &["--crop", "16,16,16", "--max-memory", "64M"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(files_in(&out), vec!["small.nii.gz".to_string()]);
}

#[test]
fn prepare_refuses_a_fifo_without_blocking() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("pipe.nii");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let out = tmp.path().join("out");
    let o = prepare(&fifo, &out, &[]);
    assert!(o.code.is_some_and(|c| c != 0), "{}", o.stderr);
    assert!(files_in(&out).is_empty());
}

fn generate(model: &Path, out: &Path, extra: &[&str]) -> Outcome {
    let mut args = vec![
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "1",
        "--threads",
        "1",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn generate_refuses_dev_zero_and_fifos_as_model() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = generate(Path::new("/dev/zero"), &out, &[]);
    assert_refused(&o, &["/dev/zero", "magic"], 0);
    let fifo = tmp.path().join("model.blob");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let o = generate(&fifo, &out, &[]);
    assert_refused(&o, &["model.blob", "FIFO"], 0);
    assert!(files_in(&out).is_empty(), "{:?}", files_in(&out));
}

#[test]
fn generate_refuses_dev_zero_and_fifos_as_init_noise() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_blob(tmp.path());
    let out = tmp.path().join("out");
    let o = generate(&model, &out, &["--init-noise", "/dev/zero"]);
    assert_refused(&o, &["/dev/zero", "not a .npy file"], 0);
    let fifo = tmp.path().join("noise.npy");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let o = generate(&model, &out, &["--init-noise", fifo.to_str().unwrap()]);
    assert_refused(&o, &["noise.npy", "FIFO"], 0);
    // a header claiming a huge array over a short file: refused by the length check
    let big = tmp.path().join("big.npy");
    let mut b = ldm_io::npy::header_bytes(&[1, 4, 4096, 4096, 4096]);
    b.extend_from_slice(&[0u8; 64]);
    std::fs::write(&big, &b).unwrap();
    let o = generate(&model, &out, &["--init-noise", big.to_str().unwrap()]);
    assert_refused(&o, &["big.npy", "1099511627776 bytes"], 0);
    assert!(files_in(&out).is_empty(), "{:?}", files_in(&out));
}

#[test]
fn generate_and_bench_refuse_plans_beyond_memory_before_allocating_them() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_blob(tmp.path());
    let m = model.to_str().unwrap();
    // The legitimate memory is the process and its weights (the blob is read and validated
    // before planning); the plan itself must not be allocated.
    let weights = baseline() + std::fs::metadata(&model).unwrap().len();
    let out = tmp.path().join("out");
    let huge = ["--seed", "9", "--latent-shape", "8,4096,4096,4096"];
    let o = generate(&model, &out, &huge);
    assert_refused(&o, &["needs", "GiB", "available", "--max-memory"], weights);
    let o = generate(&model, &out, &["--seed", "9", "--max-memory", "1K"]);
    assert_refused(&o, &["max_memory is 1024 bytes", "needs"], weights);
    let o = run(&["bench", "--model", m, "--latent-shape", "8,4096,4096,4096"]);
    assert_refused(&o, &["needs", "GiB", "available"], weights);
    assert!(files_in(&out).is_empty(), "{:?}", files_in(&out));
}
