//! `brats_ldm.inspect(path)`: the report `brats-ldm inspect --json` prints, built by the same
//! `ldm_weights::report::BlobReport` from the blob's validating reader; the tests compare both on
//! the same blob.

use crate::errors::{Failure, Kind, Result};
use ldm_weights::report::BlobReport;
use ldm_weights::Blob;
use std::path::Path;

/// The JSON text of the report on the blob at `path` (opened and fully validated).
pub fn report_json(path: &Path, with_tensors: bool) -> Result<String> {
    let blob = Blob::open(path).map_err(|e| {
        Failure::new(
            Kind::Model,
            format!("{} is not a valid blob: {e}", path.display()),
        )
    })?;
    let report = BlobReport::new(&blob, path.display().to_string(), with_tensors);
    serde_json::to_string(&report)
        .map_err(|e| Failure::new(Kind::Other, format!("serialising the report: {e}")))
}
