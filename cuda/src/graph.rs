//! CUDA graph capture of one sampling step: the launches a closure enqueues on the backend's
//! stream (kernels, cuBLAS, cuDNN) are recorded once and replayed with a single launch per step.
//! Per-step values (timestep, sampler coefficients, noise offsets) are read on the device through
//! the step counter, so the same graph serves every step; replaying allocates nothing.

use std::sync::Arc;

use cudarc::driver::{sys, CudaGraph, CudaStream};

use super::error::CudaError;

/// A captured, instantiated step.
pub struct StepGraph {
    graph: CudaGraph,
}

impl StepGraph {
    /// Records what `enqueue` launches on `stream` into a graph. Capture is thread-local, so
    /// other threads' CUDA calls are unaffected; if `enqueue` fails the capture is ended and
    /// discarded and its error returned.
    pub fn capture<F>(stream: &Arc<CudaStream>, enqueue: F) -> Result<Self, CudaError>
    where
        F: FnOnce() -> Result<(), CudaError>,
    {
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(CudaError::driver("cuStreamBeginCapture"))?;
        let enqueued = enqueue();
        let ended = stream.end_capture(
            sys::CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH,
        );
        enqueued?;
        let graph = ended
            .map_err(CudaError::driver("cuStreamEndCapture / cuGraphInstantiate"))?
            .ok_or_else(|| {
                CudaError::Capture("capture produced no graph (nothing was enqueued)".into())
            })?;
        graph.upload().map_err(CudaError::driver("cuGraphUpload"))?;
        Ok(StepGraph { graph })
    }

    /// Enqueues one replay of the step on the captured stream.
    pub fn replay(&self) -> Result<(), CudaError> {
        self.graph
            .launch()
            .map_err(CudaError::driver("cuGraphLaunch"))
    }
}
