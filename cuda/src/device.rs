//! Finding a usable GPU without panicking, and the per-device state: context, one stream, the
//! module loaded from the embedded fatbin with every kernel looked up, cuBLAS and cuDNN handles.
//!
//! cudarc loads libcuda/libcublas/libcudnn lazily and panics when one is missing, so
//! `CudaDevice::new` first checks each library with `is_culib_present()`, then asks the driver
//! for devices, and only then creates a context. Every failure is a `CudaError`.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;

use super::conv::Dnn;
use super::error::CudaError;
use super::fatbin::{looks_like_fatbin, FATBIN};
use super::gemm::Blas;
use super::kernels::Kernels;

/// Which of the shared libraries the backend needs can be loaded on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LibraryPresence {
    pub driver: bool,
    pub cublas: bool,
    pub cudnn: bool,
}

/// Probes the loader for libcuda, libcublas and libcudnn (no CUDA call is made).
pub fn library_presence() -> LibraryPresence {
    // SAFETY: these only try to dlopen the library names cudarc would use, then close them.
    unsafe {
        LibraryPresence {
            driver: cudarc::driver::sys::is_culib_present(),
            cublas: cudarc::cublas::sys::is_culib_present(),
            cudnn: cudarc::cudnn::sys::is_culib_present(),
        }
    }
}

/// Checks, without panicking, that device `ordinal` can be used: libraries present, the driver
/// initialises, and the ordinal exists. Returns the number of devices.
pub fn check_available(ordinal: usize) -> Result<usize, CudaError> {
    let libs = library_presence();
    if !libs.driver {
        return Err(CudaError::unavailable(
            "no CUDA driver was found (the NVIDIA driver library libcuda.so could not be loaded)",
        ));
    }
    let count = CudaContext::device_count().map_err(|e| {
        CudaError::unavailable(format!(
            "the CUDA driver failed to initialise or found no device ({e})"
        ))
    })?;
    let count = usize::try_from(count).unwrap_or(0);
    if count == 0 {
        return Err(CudaError::unavailable("the CUDA driver reports no GPU"));
    }
    if ordinal >= count {
        return Err(CudaError::unavailable(format!(
            "GPU {ordinal} requested but only {count} present"
        )));
    }
    if !libs.cublas {
        return Err(CudaError::unavailable(
            "cuBLAS (libcublas.so) was not found",
        ));
    }
    if !libs.cudnn {
        return Err(CudaError::unavailable(
            "cuDNN 9 (libcudnn.so.9) was not found",
        ));
    }
    Ok(count)
}

/// What the driver says about the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub total_memory: usize,
}

/// A GPU ready to run kernels: context, stream, kernels, cuBLAS, cuDNN.
/// Field order is drop order: handles and module go before the stream and context.
pub struct CudaDevice {
    pub blas: Blas,
    pub dnn: Dnn,
    pub kernels: Kernels,
    module: Arc<CudaModule>,
    stream: Arc<CudaStream>,
    ctx: Arc<CudaContext>,
    info: DeviceInfo,
}

impl CudaDevice {
    /// Opens GPU `ordinal`. Without a driver, GPU, cuBLAS or cuDNN: `DeviceUnavailable`.
    pub fn new(ordinal: usize) -> Result<Self, CudaError> {
        check_available(ordinal)?;
        let ctx =
            CudaContext::new(ordinal).map_err(CudaError::driver("cuCtx (primary context)"))?;
        let name = ctx.name().map_err(CudaError::driver("cuDeviceGetName"))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(CudaError::driver("cuDeviceGetAttribute"))?;
        if major < 8 {
            return Err(CudaError::UnsupportedDevice {
                ordinal,
                name,
                major,
                minor,
            });
        }
        let total_memory = ctx
            .total_mem()
            .map_err(CudaError::driver("cuDeviceTotalMem"))?;
        // One stream only: cudarc's cross-stream event tracking is unnecessary and would record
        // events inside graph captures.
        // SAFETY: called before any allocation or launch on this context.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(CudaError::driver("cuStreamCreate"))?;
        if !looks_like_fatbin(FATBIN) {
            return Err(CudaError::MissingKernel(
                "embedded fatbin (build.rs output is not a fatbin)".into(),
            ));
        }
        let module = ctx
            .load_module(Ptx::from_binary(FATBIN.to_vec()))
            .map_err(CudaError::driver("cuModuleLoadData (embedded fatbin)"))?;
        let kernels = Kernels::load(&module, stream.clone())?;
        // SAFETY: the stream belongs to this context and outlives the handles (field order).
        let blas = unsafe { Blas::new(stream.cu_stream() as _) }?;
        let dnn = unsafe { Dnn::new(stream.cu_stream() as _) }?;
        Ok(CudaDevice {
            blas,
            dnn,
            kernels,
            module,
            stream,
            ctx,
            info: DeviceInfo {
                ordinal,
                name,
                compute_capability: (major, minor),
                total_memory,
            },
        })
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub fn module(&self) -> &Arc<CudaModule> {
        &self.module
    }

    /// (free, total) device memory in bytes, for "no per-step allocation" checks.
    pub fn memory_info(&self) -> Result<(usize, usize), CudaError> {
        self.ctx
            .mem_get_info()
            .map_err(CudaError::driver("cuMemGetInfo"))
    }

    /// Makes this device's context current on the calling thread (raw cuBLAS/cuDNN calls do
    /// not do it themselves), so the owner may move between threads.
    pub fn bind_to_thread(&self) -> Result<(), CudaError> {
        self.ctx
            .bind_to_thread()
            .map_err(CudaError::driver("cuCtxSetCurrent"))
    }

    /// Waits for everything enqueued on the stream.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream
            .synchronize()
            .map_err(CudaError::driver("cuStreamSynchronize"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_gpu_construction_is_an_error_not_a_panic() {
        let libs = library_presence();
        match CudaDevice::new(0) {
            Ok(dev) => {
                // A GPU machine: the device must be usable and report itself.
                println!("CUDA device present: {:?}", dev.info());
                assert!(dev.info().compute_capability.0 >= 8);
            }
            Err(e) => {
                println!("CUDA backend unavailable as expected here: {e}");
                if !libs.driver {
                    assert!(matches!(e, CudaError::DeviceUnavailable { .. }), "{e:?}");
                    assert!(e.to_string().contains("libcuda"), "{e}");
                }
            }
        }
    }

    #[test]
    fn out_of_range_ordinal_is_unavailable() {
        let e = check_available(1 << 20).expect_err("no machine has 2^20 GPUs");
        assert!(matches!(e, CudaError::DeviceUnavailable { .. }), "{e:?}");
    }
}
