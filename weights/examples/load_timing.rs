//! Measures what loading a large blob costs compared with one plain read of the file.
//!
//! Writes the bundle model (decoder + encoder + UNet) with f32 weights, about 0.85 GB, to
//! `<dir>/bundle_f32.ldm` (kept for reuse), then times `std::fs::read` and `Blob::open` on it,
//! and the two validation passes (checksum, finiteness scan) on their own.
//!
//! Run: `cargo run --release -p ldm-weights --example load_timing -- [DIR] [REPEATS]`
//! (default DIR is the system temp dir, REPEATS 5; medians are reported).

use std::path::PathBuf;
use std::time::Instant;

use ldm_weights::{expected_tensors, write_blob_file, Blob, DType, ModelConfig, TensorData};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let repeats: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5).max(1);
    let path = dir.join("bundle_f32.ldm");
    let cfg = ModelConfig::bundle();

    if Blob::open(&path).map(|b| b.config() == &cfg).unwrap_or(false) {
        println!("reusing {}", path.display());
    } else {
        let t = Instant::now();
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let tensors: Vec<TensorData> = expected_tensors(&cfg)
            .into_iter()
            .map(|s| {
                let v: Vec<f32> = (0..s.numel())
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                    })
                    .collect();
                TensorData::from_f32(s.name, s.shape, &v, DType::F32)
            })
            .collect();
        write_blob_file(&path, &cfg, &tensors)?;
        println!("wrote {} in {:.2} s", path.display(), t.elapsed().as_secs_f64());
    }

    let mut read = Vec::new();
    let mut open = Vec::new();
    let mut hash = Vec::new();
    let mut scan = Vec::new();
    let mut file_len = 0;
    for _ in 0..repeats {
        let t = Instant::now();
        let bytes = std::fs::read(&path)?;
        read.push(t.elapsed().as_secs_f64());
        file_len = bytes.len();

        let t = Instant::now();
        let sum = xxhash_rust::xxh3::xxh3_64(&bytes[..bytes.len() - 8]);
        hash.push(t.elapsed().as_secs_f64());
        std::hint::black_box(sum);

        let t = Instant::now();
        let bad = bytes.chunks_exact(4).fold(false, |acc, c| {
            acc | (u32::from_le_bytes([c[0], c[1], c[2], c[3]]) & 0x7f80_0000 == 0x7f80_0000)
        });
        scan.push(t.elapsed().as_secs_f64());
        std::hint::black_box(bad);
        drop(bytes);

        let t = Instant::now();
        let blob = Blob::open(&path)?;
        open.push(t.elapsed().as_secs_f64());
        std::hint::black_box(blob.checksum());
    }
    let gb = file_len as f64 / 1e9;
    let (r, o) = (median(read), median(open));
    println!("file: {gb:.3} GB, {repeats} repeats (warm page cache), medians:");
    println!("  std::fs::read      {:.3} s  ({:.2} GB/s)", r, gb / r);
    println!(
        "  Blob::open         {:.3} s  ({:.2} GB/s)  = {:.2} x fs::read",
        o,
        gb / o,
        o / r
    );
    println!(
        "  of which checksum  {:.3} s  ({:.1} GB/s, XXH3-64)",
        median(hash.clone()),
        gb / median(hash)
    );
    println!(
        "  of which NaN scan  {:.3} s  ({:.1} GB/s)",
        median(scan.clone()),
        gb / median(scan)
    );
    Ok(())
}
