//! The kernels: one `<op>.cu` per op family with its thin typed launcher `<op>.rs` beside it,
//! and here the kernel table. Names are `ldm_<op>_<f32|f16|bf16>` per storage type plus a few
//! untyped ones; `kernel_names()` lists exactly what the fatbin must contain (a test compares it
//! with the PTX entries). Launchers take raw arena addresses (`DevPtr`) and sizes, compute their
//! grid with `geometry`, and enqueue on the stream of `Kernels`; they allocate nothing on the
//! device. The table is host-side; `Kernels` and the launchers need the `device` feature.

#[cfg(feature = "device")]
use std::collections::HashMap;
#[cfg(feature = "device")]
use std::sync::Arc;

#[cfg(feature = "device")]
use cudarc::driver::{CudaFunction, CudaModule, CudaStream, LaunchConfig};
use ldm_weights::DType;

#[cfg(feature = "device")]
use crate::error::CudaError;
#[cfg(feature = "device")]
use crate::geometry::Launch;

#[cfg(feature = "device")]
mod attention;
#[cfg(feature = "device")]
mod elementwise;
#[cfg(feature = "device")]
mod groupnorm_silu;
#[cfg(feature = "device")]
mod philox;
#[cfg(feature = "device")]
mod sampler;
#[cfg(feature = "device")]
mod time_embedding;
#[cfg(feature = "device")]
mod upsample;

#[cfg(feature = "device")]
pub use attention::AttentionArgs;
#[cfg(feature = "device")]
pub use philox::NoiseStream;

/// Kernels instantiated once per storage type (`ldm_<op>_<suffix>`).
pub const TYPED_OPS: [&str; 18] = [
    "add",
    "add_channel_bias",
    "attention_hd16",
    "attention_hd32",
    "attention_hd64",
    "attention_hd128",
    "cast_from_f32",
    "cast_to_f32",
    "concat_channels",
    "ddim_step",
    "ddpm_step",
    "groupnorm_apply",
    "groupnorm_partial",
    "philox_normal",
    "pndm_step",
    "silu",
    "timestep_embedding",
    "upsample_nearest2x",
];

/// Kernels with no storage type.
pub const UNTYPED_KERNELS: [&str; 3] =
    ["ldm_groupnorm_finalize", "ldm_step_advance", "ldm_step_set"];

/// All storage types the kernels are instantiated for.
pub const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// Entry-point name of a typed op.
pub fn typed_name(op: &str, dtype: DType) -> String {
    format!("ldm_{op}_{}", dtype.name())
}

/// Every entry point the launchers use, sorted.
pub fn kernel_names() -> Vec<String> {
    let mut names: Vec<String> = TYPED_OPS
        .iter()
        .flat_map(|op| DTYPES.iter().map(move |&d| typed_name(op, d)))
        .chain(UNTYPED_KERNELS.iter().map(|s| s.to_string()))
        .collect();
    names.sort();
    names
}

#[cfg(feature = "device")]
fn config(l: Launch) -> LaunchConfig {
    LaunchConfig {
        grid_dim: l.grid,
        block_dim: l.block,
        shared_mem_bytes: l.shared_bytes,
    }
}

#[cfg(feature = "device")]
fn i64_of(what: &'static str, v: usize) -> Result<i64, CudaError> {
    i64::try_from(v).map_err(|_| CudaError::InvalidLaunch {
        kernel: what,
        reason: format!("{v} exceeds 64-bit signed"),
    })
}

#[cfg(feature = "device")]
fn i32_of(what: &'static str, v: usize) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::InvalidLaunch {
        kernel: what,
        reason: format!("{v} exceeds 32-bit signed"),
    })
}

#[cfg(feature = "device")]
/// All kernels of the module, looked up by name once at construction, plus the stream.
pub struct Kernels {
    stream: Arc<CudaStream>,
    functions: HashMap<String, CudaFunction>,
}

#[cfg(feature = "device")]
impl Kernels {
    /// Looks up every name of `kernel_names()` in `module`.
    pub fn load(module: &Arc<CudaModule>, stream: Arc<CudaStream>) -> Result<Self, CudaError> {
        let mut functions = HashMap::new();
        for name in kernel_names() {
            let f = module
                .load_function(&name)
                .map_err(|_| CudaError::MissingKernel(name.clone()))?;
            functions.insert(name, f);
        }
        Ok(Kernels { stream, functions })
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    fn function(&self, name: &str) -> Result<&CudaFunction, CudaError> {
        self.functions
            .get(name)
            .ok_or_else(|| CudaError::MissingKernel(name.to_string()))
    }

    fn typed(&self, op: &str, dtype: DType) -> Result<&CudaFunction, CudaError> {
        self.function(&typed_name(op, dtype))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry;

    #[cfg(feature = "device")]
    #[test]
    fn launchers_and_fatbin_agree_on_every_kernel() {
        use crate::fatbin::{ptx_entries, FATBIN};
        let names = kernel_names();
        assert_eq!(names.len(), TYPED_OPS.len() * 3 + UNTYPED_KERNELS.len());
        let entries = ptx_entries(FATBIN);
        assert_eq!(entries, names, "kernels in cuda/*.cu and kernels.rs differ");
    }

    #[test]
    fn attention_head_dims_have_kernels() {
        for hd in geometry::ATTENTION_HEAD_DIMS {
            assert!(TYPED_OPS.contains(&format!("attention_hd{hd}").as_str()));
        }
        assert_eq!(typed_name("silu", DType::BF16), "ldm_silu_bf16");
    }
}
