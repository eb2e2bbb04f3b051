//! Slab decoding under `max_memory` equals the full decode (within 1e-6 relative L2) and its
//! plan stays under the bound; the MONAI fixture decode still matches.

mod common;

use common::*;
use ldm_runtime::{Options, Runtime, RuntimeError};

#[test]
fn slab_decode_equals_full_decode_under_the_memory_bound() {
    let (zs, z) = npy("autoencoder/decode_z.npy");
    let (_, want) = npy("autoencoder/decode_image.npy");
    let latent = [zs[1], zs[2], zs[3], zs[4]];
    let cfg = config(true, false, 1.0, latent.map(|v| v as u32));
    let blob = fixture_blob(&cfg);
    let base = Options { latent_shape: Some(latent), threads: Some(1), ..Options::default() };
    let mut full = Runtime::new(&blob, base.clone()).unwrap();
    let needed = full.plan().total_bytes - full.plan().weights_bytes;
    let mut reference = vec![0f32; want.len()];
    full.decode(&z, &mut reference).unwrap();
    let mut tried = 0;
    for frac in [0.8, 0.7, 0.6, 0.55, 0.5, 0.45, 0.4] {
        let limit = (needed as f64 * frac) as usize;
        let opts = Options { max_memory: Some(limit), ..base.clone() };
        let mut rt = match Runtime::new(&blob, opts) {
            Ok(rt) => rt,
            Err(RuntimeError::MemoryLimit { .. }) => continue,
            Err(e) => panic!("{e}"),
        };
        let p = rt.plan().clone();
        assert!(p.total_bytes - p.weights_bytes <= limit, "plan {} over limit {limit}", p.total_bytes - p.weights_bytes);
        let mut out = vec![0f32; want.len()];
        rt.decode(&z, &mut out).unwrap();
        let e_full = rel_l2(&out, &reference);
        let e_monai = rel_l2(&out, &want);
        println!(
            "limit {limit} B ({frac} of {needed}): {} slabs of {} planes, {} passes, arena {} B; vs full {e_full:.2e}, vs MONAI {e_monai:.2e}",
            p.decoder_slabs, p.decoder_slab_planes, p.decoder_passes, p.arena_bytes
        );
        assert!(e_full < 1e-6, "slab vs full rel L2 {e_full}");
        assert!(e_monai < 1e-5, "slab vs MONAI rel L2 {e_monai}");
        if p.decoder_slabs > 1 {
            tried += 1;
        }
    }
    assert!(tried >= 2, "too few memory bounds made the decoder slab");
    let tiny = Options { max_memory: Some(1000), ..base };
    assert!(matches!(Runtime::new(&blob, tiny), Err(RuntimeError::MemoryLimit { .. })));
}
