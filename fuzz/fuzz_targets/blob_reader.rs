//! Fuzz target for the blob reader: `Blob::from_bytes` must never panic, and a blob it accepts
//! must be internally consistent and survive a write -> read round trip unchanged.
//!
//! Each input is tried twice: as is (exercising the prefix checks and the checksum), and with its
//! last 8 bytes replaced by the correct checksum, so that mutations reach the header decoder, the
//! config validation and the tensor-table checks instead of stopping at the checksum.

#![no_main]

use ldm_weights::{write_blob, Blob, TensorData};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    exercise(data.to_vec());
    if data.len() >= 28 {
        let mut sealed = data.to_vec();
        let end = sealed.len() - 8;
        let sum = xxhash_rust::xxh3::xxh3_64(&sealed[..end]);
        sealed[end..].copy_from_slice(&sum.to_le_bytes());
        exercise(sealed);
    }
});

fn exercise(bytes: Vec<u8>) {
    let Ok(blob) = Blob::from_bytes(bytes) else { return };
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
    write_blob(&mut out, blob.config(), &tensors).expect("writer accepts a blob the reader accepted");
    let again = Blob::from_bytes(out).expect("reader accepts the writer's output");
    assert_eq!(again.config(), blob.config());
    for t in &tensors {
        assert_eq!(
            again.tensor(&t.name).expect("tensor survives").bytes,
            t.bytes.as_slice()
        );
    }
}
