//! NIfTI-1 files as plain bytes (`.nii`, and `.nii.gz` by content) through the reader of
//! `ldm_io::nifti` that `prepare`, `train` and the trainer's data pipeline use: the header
//! checks, the size checks before allocation, gzip inflation limits and the voxel decoding.
//! An accepted volume has one finite value per voxel. `read_header_summary` (how `generate`
//! decides whether an existing output is complete) gets the same bytes, raw and inflated.

#![no_main]

use ldm_io::nifti::{read_checked_info, read_header_summary, read_info, read_volume_within};
use ldm_io::Budget;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ldm_fuzz::run(data, |data| {
        let path = ldm_fuzz::scratch::file("volume.nii", data);
        exercise(&path, data);
    })
});

fn exercise(path: &std::path::Path, data: &[u8]) {
    let info = read_info(path);
    let checked = read_checked_info(path);
    if checked.is_ok() {
        assert!(
            info.is_ok(),
            "read_checked_info accepted what read_info refused"
        );
    }
    let budget = Budget::new(ldm_fuzz::LIMIT as u64 / 4);
    // None: a 3-D volume (a 4-D one is refused); Some(1): the second channel of a 4-D volume,
    // after skipping the first (a 3-D one is refused).
    for channel in [None, Some(1)] {
        if let Ok(image) = read_volume_within(path, channel, budget) {
            let info = info
                .as_ref()
                .expect("a readable volume has a readable header");
            assert_eq!(image.dims, info.dims);
            assert_eq!(image.data.len(), image.dims.iter().product::<usize>());
            assert!(image.data.iter().all(|v| v.is_finite()));
            assert_eq!(image.affine, info.affine);
        }
    }
    let _ = read_header_summary(&mut &data[..]);
    let _ = read_header_summary(&mut ldm_io::gzip::decoder(data));
}
