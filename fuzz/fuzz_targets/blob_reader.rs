//! The weight blob reader (`Blob::open_within`, what `generate`, `inspect` and `bench` open
//! models with): never a panic or an allocation past the harness's bound, and a blob it accepts
//! is internally consistent and survives a write -> read round trip with identical config and
//! tensors.
//!
//! Each input is tried twice: as is (the prefix checks and the checksum), and with its last 8
//! bytes replaced by the correct checksum, so that mutations reach the header decoder, the
//! config validation and the tensor-table checks instead of stopping at the checksum.

#![no_main]

use ldm_io::Budget;
use ldm_weights::{write_blob, Blob, TensorData};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ldm_fuzz::run(data, |data| {
        exercise(data);
        if data.len() >= 28 {
            if let Some(sealed) = ldm_fuzz::build::seal_xxh3(data) {
                exercise(&sealed);
            }
        }
    })
});

fn exercise(bytes: &[u8]) {
    let path = ldm_fuzz::scratch::file("model.ldmw", bytes);
    let Ok(blob) = Blob::open_within(&path, Budget::new(ldm_fuzz::LIMIT as u64 / 4)) else {
        return;
    };
    let mut tensors = Vec::new();
    for info in blob.tensors() {
        let view = blob.tensor(&info.name).expect("listed tensor is present");
        let numel: usize = info.shape.iter().product();
        let values = view.to_f32_vec();
        assert_eq!(values.len(), numel);
        assert!(values.iter().all(|v| v.is_finite()));
        assert_eq!(info.offset % 256, 0);
        tensors.push(TensorData {
            name: info.name.clone(),
            dtype: info.dtype,
            shape: info.shape.clone(),
            bytes: view.bytes.to_vec(),
        });
    }
    // The writer accepts whatever the reader accepted, and the result reads back identically.
    let mut out = Vec::new();
    write_blob(&mut out, blob.config(), &tensors)
        .expect("writer accepts a blob the reader accepted");
    let again = Blob::from_bytes(out).expect("reader accepts the writer's output");
    assert_eq!(again.config(), blob.config());
    assert_eq!(again.tensors().len(), tensors.len());
    for t in &tensors {
        let v = again.tensor(&t.name).expect("tensor survives");
        assert_eq!((v.dtype, v.shape), (t.dtype, t.shape.as_slice()));
        assert_eq!(v.bytes, t.bytes.as_slice());
    }
}
