//! Structure-aware: hostile pickle bodies inside valid `torch.save` zips. The input is the body
//! of `data.pkl` (seeds: the fixtures' real state-dict pickles); the harness wraps it in a zip
//! with a valid central directory, a `byteorder` member and one storage member for every
//! storage the pickle references (sized as declared, or deliberately short), then reads it
//! through `ldm_import::read_checkpoint`, as `convert` does. Plain byte mutation of a zip
//! rarely keeps the archive readable; this reaches the unpickler, the state-dict selection,
//! the view checks and the strided gather on every input.

#![no_main]

use std::collections::HashSet;

use ldm_fuzz::build::{fnv1a, zip_archive, Filler};
use ldm_import::pickle::{unpickle, Obj, Pickle, StorageRef};
use libfuzzer_sys::fuzz_target;

/// Most bytes of storage members one archive gets (the rest are written short).
const STORAGE_BYTES: u64 = 256 << 10;

fuzz_target!(|data: &[u8]| {
    ldm_fuzz::run(data, |body| {
        let storages = match unpickle(body) {
            Ok(p) => storages_of(&p),
            // Refused pickles still go through the archive path (the error must be the same).
            Err(_) => Vec::new(),
        };
        let h = fnv1a(body);
        let mut fill = Filler::new(h);
        let mut members = vec![("archive/data.pkl".to_string(), body.to_vec())];
        match h & 3 {
            1 => members.push(("archive/byteorder".into(), b"little".to_vec())),
            2 => members.push(("archive/byteorder".into(), b"big".to_vec())),
            3 => members.push(("archive/byteorder".into(), b"middle".to_vec())),
            _ => {}
        }
        let short = (h >> 2) & 7 == 0;
        let mut budget = STORAGE_BYTES;
        for (i, s) in storages.iter().enumerate() {
            let want = s.numel.saturating_mul(s.dtype.size_bytes() as u64);
            let mut len = want.min(budget);
            if short && i == 0 {
                len = len.saturating_sub(1);
            }
            budget -= len.min(budget);
            members.push((format!("archive/data/{}", s.key), fill.bytes(len as usize)));
        }
        let archive = zip_archive(&members);
        ldm_fuzz::scratch::dump("torch_pickle.pt", &archive);
        let path = ldm_fuzz::scratch::file("checkpoint.pt", &archive);
        for key in [None, Some("state_dict")] {
            if let Ok(tensors) = ldm_import::read_checkpoint(&path, key) {
                ldm_fuzz::check_tensors(&tensors);
            }
        }
    })
});

/// Every distinct storage reachable from the root (each object visited once).
fn storages_of(p: &Pickle) -> Vec<StorageRef> {
    let mut seen_obj = HashSet::new();
    let mut seen_key = HashSet::new();
    let mut out = Vec::new();
    let mut todo = vec![p.root];
    while let Some(id) = todo.pop() {
        if !seen_obj.insert(id) {
            continue;
        }
        match p.get(id) {
            Obj::Dict(entries) => entries.iter().for_each(|&(k, v)| todo.extend([k, v])),
            Obj::Tuple(items) | Obj::List(items) => todo.extend(items.iter().copied()),
            Obj::Tensor(t) if seen_key.insert(t.storage.key.clone()) => out.push(t.storage.clone()),
            Obj::Storage(s) if seen_key.insert(s.key.clone()) => out.push(s.clone()),
            _ => {}
        }
    }
    out
}
