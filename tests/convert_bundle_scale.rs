//! Bundle-scale conversion (ignored by default: it writes about 1.7 GB of temporary files).
//! Run with `cargo test --release --test convert_bundle_scale -- --ignored --nocapture`.
//!
//! Builds checkpoints of the bundle's exact architecture (every tensor the generative 0.2.3
//! state dicts hold, proj_attn included) as `torch.save`-layout zip archives — the pickle is
//! emitted opcode by opcode as torch writes it — converts them with `--preset bundle`, and
//! checks the tensor count, parameter counts and a sample of values, printing the timings.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ldm_weights::{expected_tensors, Blob, ModelConfig, TensorSpec};

fn uni(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn int(out: &mut Vec<u8>, v: usize) {
    out.push(b'J');
    out.extend_from_slice(&(v as i32).to_le_bytes());
}

fn global(out: &mut Vec<u8>, module: &str, name: &str) {
    out.push(b'c');
    out.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
}

/// The data.pkl torch.save writes for an OrderedDict of contiguous float32 tensors.
fn state_dict_pickle(specs: &[TensorSpec]) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    global(&mut p, "collections", "OrderedDict");
    p.extend_from_slice(b")R(");
    for (i, t) in specs.iter().enumerate() {
        uni(&mut p, &t.name);
        global(&mut p, "torch._utils", "_rebuild_tensor_v2");
        p.extend_from_slice(b"((");
        uni(&mut p, "storage");
        global(&mut p, "torch", "FloatStorage");
        uni(&mut p, &i.to_string());
        uni(&mut p, "cpu");
        int(&mut p, t.numel());
        p.extend_from_slice(b"tQ");
        int(&mut p, 0);
        p.push(b'(');
        t.shape.iter().for_each(|&s| int(&mut p, s));
        p.push(b't');
        p.push(b'(');
        let mut stride = vec![1usize; t.shape.len()];
        for d in (0..t.shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * t.shape[d + 1];
        }
        stride.iter().for_each(|&s| int(&mut p, s));
        p.push(b't');
        p.push(0x89);
        global(&mut p, "collections", "OrderedDict");
        p.extend_from_slice(b")Rt");
        p.push(b'R');
    }
    p.extend_from_slice(b"u.");
    p
}

/// Deterministic values: a hash of (tensor index, element index) scaled into [-0.5, 0.5).
fn value(t: usize, i: usize) -> f32 {
    let mut x = (t as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (i as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 31;
    (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
}

fn write_pt(path: &Path, archive: &str, specs: &[TensorSpec]) {
    let file = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(std::io::BufWriter::new(file));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    z.start_file(format!("{archive}/data.pkl"), opts).unwrap();
    z.write_all(&state_dict_pickle(specs)).unwrap();
    z.start_file(format!("{archive}/byteorder"), opts).unwrap();
    z.write_all(b"little").unwrap();
    for (ti, t) in specs.iter().enumerate() {
        z.start_file(format!("{archive}/data/{ti}"), opts).unwrap();
        let bytes: Vec<u8> = (0..t.numel())
            .flat_map(|i| value(ti, i).to_le_bytes())
            .collect();
        z.write_all(&bytes).unwrap();
    }
    z.finish().unwrap();
}

/// Generative 0.2.3 state-dict specs of one network (blob prefix stripped), proj_attn included.
fn checkpoint_specs(prefix: &str) -> Vec<TensorSpec> {
    let mut cfg = ModelConfig {
        decoder: Some(ldm_weights::DecoderConfig::bundle()),
        encoder: Some(ldm_weights::EncoderConfig::bundle()),
        unet: Some(ldm_weights::UnetConfig::bundle()),
        scheduler: ldm_weights::SchedulerConfig::bundle(),
        scale_factor: 1.0,
        latent_shape: [8, 36, 44, 28],
        geometry: ldm_weights::OutputGeometry::bundle(),
        provenance: Default::default(),
    };
    if let Some(u) = cfg.unet.as_mut() {
        u.attention_output_projection = true;
    }
    expected_tensors(&cfg)
        .into_iter()
        .filter_map(|t| {
            let name = t.name.strip_prefix(prefix)?.strip_prefix('.')?.to_string();
            Some(TensorSpec {
                name,
                shape: t.shape,
            })
        })
        .collect()
}

#[test]
#[ignore = "writes ~1.7 GB; run explicitly (see the file's header)"]
fn bundle_scale_pt_conversion() {
    let dir = tempfile::tempdir().unwrap();
    let ae: PathBuf = dir.path().join("model_autoencoder.pt");
    let unet: PathBuf = dir.path().join("model.pt");
    let ae_specs = checkpoint_specs("autoencoder");
    let unet_specs = checkpoint_specs("unet");
    let t = Instant::now();
    write_pt(&ae, "model_autoencoder", &ae_specs);
    write_pt(&unet, "model", &unet_specs);
    println!(
        "wrote bundle-size checkpoints in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let out = dir.path().join("bundle.blob");
    let t = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_brats-ldm"))
        .args(["convert", "--preset", "bundle", "--autoencoder"])
        .arg(&ae)
        .arg("--unet")
        .arg(&unet)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    println!("{stdout}convert (read 2 checkpoints, write, re-verify): {secs:.1} s");

    let blob = Blob::open(&out).unwrap();
    let pc = ldm_weights::parameter_counts(blob.config());
    println!(
        "parameters: decoder {} encoder {} unet {}",
        pc.decoder, pc.encoder, pc.unet
    );
    assert!(stdout.contains("dropped 22 tensors"), "{stdout}");
    assert_eq!(blob.tensors().len(), ae_specs.len() + unet_specs.len() - 22);
    // docs/architecture.md (bundle sizes): 21.0 M VAE parameters, 189.3 M UNet parameters used.
    assert_eq!(
        ((pc.decoder + pc.encoder) as f64 / 1e5).round() / 10.0,
        21.0
    );
    assert_eq!((pc.unet as f64 / 1e5).round() / 10.0, 189.3);
    for (prefix, specs) in [("autoencoder", &ae_specs), ("unet", &unet_specs)] {
        for (ti, spec) in specs.iter().enumerate().step_by(17) {
            if spec.name.contains("proj_attn") {
                continue;
            }
            let v = blob
                .tensor(&format!("{prefix}.{}", spec.name))
                .unwrap()
                .to_f32_vec();
            for i in [0, v.len() / 2, v.len() - 1] {
                assert_eq!(
                    v[i].to_bits(),
                    value(ti, i).to_bits(),
                    "{prefix}.{}[{i}]",
                    spec.name
                );
            }
        }
    }
}
