//! Planning a runtime for `generate` and `bench`: the plan's bytes printed, a plan that cannot
//! fit in the memory available refused, then everything allocated.

use crate::cmd::memory;
use anyhow::Context;
use ldm_runtime::{Device, Options, Runtime};
use ldm_weights::Blob;
use std::path::Path;

/// Plans the runtime, prints the plan's bytes (`announce`), refuses a plan that cannot fit in
/// the memory available, then allocates it.
pub fn plan_and_allocate(
    blob: &Blob,
    options: Options,
    model_path: &Path,
    announce: bool,
) -> anyhow::Result<Runtime> {
    let cpu = options.device == Device::Cpu;
    let planned = Runtime::plan_for(blob, options)
        .with_context(|| format!("cannot prepare model {} to run", model_path.display()))?;
    let volume_bytes = planned.output_shape().iter().product::<usize>() as u64 * 4;
    let available = memory::available();
    if announce {
        let mut line = memory::describe(planned.report(), volume_bytes);
        if let Some(a) = available.as_ref().filter(|_| cpu) {
            line.push_str(&format!("; {} available", memory::gib(a.bytes)));
        }
        eprintln!("{line}");
    }
    if cpu {
        memory::check_fits(planned.report(), volume_bytes, available.as_ref())?;
    }
    planned
        .allocate()
        .with_context(|| format!("cannot prepare model {} to run", model_path.display()))
}
