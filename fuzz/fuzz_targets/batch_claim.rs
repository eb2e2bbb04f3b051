//! The batch job's per-volume claim files (`.NAME.claim`, read by every run sharing an output
//! folder to decide whether a volume is taken or its holder is gone): `claim::acquire` with the
//! input as the existing claim. A claim it reports busy is left exactly as it was; a claim it
//! takes is ours and disappears when released.
//!
//! The claim code is the CLI's own `src/output/claim.rs`, compiled into this target as a module
//! (the binary crate has no library to link); nothing is copied.

#![no_main]

#[path = "../../src/output/claim.rs"]
#[allow(dead_code)]
mod claim;

use claim::{acquire, claim_path, Acquired};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ldm_fuzz::run(data, |data| {
        let dir = ldm_fuzz::scratch::fresh_dir("claims");
        let name = "seed-1.nii.gz";
        let path = claim_path(&dir, name);
        std::fs::write(&path, data).expect("scratch claim");
        match acquire(&dir, name).expect("a writable folder") {
            Acquired::Owned(c) => {
                assert!(c.still_ours());
                c.release();
                assert!(!path.exists(), "a released claim is removed");
            }
            Acquired::Busy(_) => {
                assert_eq!(std::fs::read(&path).expect("a busy claim stays"), data);
            }
        }
        let leftovers = std::fs::read_dir(&dir).expect("scratch").count();
        assert!(leftovers <= 1, "claims leave no stray files");
    })
});
