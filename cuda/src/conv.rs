//! 3-D convolutions through cuDNN (NCDHW, cross-correlation, zero padding, fp32 accumulation).
//! `Conv3dSpec` holds the shape math (output extents, cuDNN's int dims and packed strides,
//! FLOPs) and is unit-tested on the host; `ConvPlan` owns the cuDNN descriptors and the chosen
//! algorithm with its workspace size, all decided at load time.
//! fp32 uses CUDNN_FMA_MATH (no TF32) so the GPU stays within 1e-4 of the CPU; fp16/bf16 use
//! tensor cores. Asymmetric padding (the encoder's Downsample) is not expressible here.

#[cfg(feature = "device")]
use cudarc::cudnn::{result as dnn, sys};
#[cfg(feature = "device")]
use ldm_weights::DType;

#[cfg(feature = "device")]
use super::arena::DevPtr;
use super::error::CudaError;

/// Shape of one Conv3d: input [batch, in_channels, D, H, W], weight [out, in, kd, kh, kw].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv3dSpec {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub in_dims: [usize; 3],
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    /// Symmetric zero padding per axis.
    pub padding: [usize; 3],
}

impl Conv3dSpec {
    /// k x k x k, stride 1, padding k/2 ("same" for odd k): the 3x3 convs and 1x1 projections.
    pub fn same(
        batch: usize,
        in_channels: usize,
        out_channels: usize,
        in_dims: [usize; 3],
        k: usize,
    ) -> Self {
        Conv3dSpec {
            batch,
            in_channels,
            out_channels,
            in_dims,
            kernel: [k; 3],
            stride: [1; 3],
            padding: [k / 2; 3],
        }
    }

    /// The UNet's Downsample: 3x3x3, stride 2, padding 1.
    pub fn down(
        batch: usize,
        in_channels: usize,
        out_channels: usize,
        in_dims: [usize; 3],
    ) -> Self {
        Conv3dSpec {
            batch,
            in_channels,
            out_channels,
            in_dims,
            kernel: [3; 3],
            stride: [2; 3],
            padding: [1; 3],
        }
    }

    /// Output extents: floor((in + 2 pad - k) / stride) + 1 per axis.
    pub fn out_dims(&self) -> Result<[usize; 3], CudaError> {
        let mut out = [0usize; 3];
        for (a, o) in out.iter_mut().enumerate() {
            let (n, k, s, p) = (
                self.in_dims[a],
                self.kernel[a],
                self.stride[a],
                self.padding[a],
            );
            if k == 0 || s == 0 {
                return Err(CudaError::Shape(format!(
                    "conv axis {a}: kernel {k} and stride {s} must be positive"
                )));
            }
            let padded = n.checked_add(2 * p).ok_or_else(|| {
                CudaError::Shape(format!("conv axis {a}: padded extent overflows"))
            })?;
            if n == 0 || padded < k {
                return Err(CudaError::Shape(format!(
                    "conv axis {a}: input extent {n} (padding {p}) is smaller than the kernel {k}"
                )));
            }
            *o = (padded - k) / s + 1;
        }
        Ok(out)
    }

    /// cuDNN's [N, C, D, H, W] of the input.
    pub fn input_dims(&self) -> Result<[i32; 5], CudaError> {
        to_i32([
            self.batch,
            self.in_channels,
            self.in_dims[0],
            self.in_dims[1],
            self.in_dims[2],
        ])
    }

    /// cuDNN's [K, C, kd, kh, kw] of the filter (PyTorch's weight layout).
    pub fn filter_dims(&self) -> Result<[i32; 5], CudaError> {
        to_i32([
            self.out_channels,
            self.in_channels,
            self.kernel[0],
            self.kernel[1],
            self.kernel[2],
        ])
    }

    /// cuDNN's [N, K, D', H', W'] of the output.
    pub fn output_dims(&self) -> Result<[i32; 5], CudaError> {
        let o = self.out_dims()?;
        to_i32([self.batch, self.out_channels, o[0], o[1], o[2]])
    }

    /// Multiply-adds x 2 (the FLOP convention of docs/architecture.md).
    pub fn flops(&self) -> Result<u64, CudaError> {
        let o = self.out_dims()?;
        let per_output = (self.in_channels * self.kernel.iter().product::<usize>()) as u64;
        let outputs =
            (self.batch * self.out_channels) as u64 * o.iter().map(|&x| x as u64).product::<u64>();
        Ok(2 * per_output * outputs)
    }

    /// Refuses shapes no convolution can have (zero sizes, padding beyond half the kernel).
    pub fn validate(&self) -> Result<(), CudaError> {
        if self.batch == 0 || self.in_channels == 0 || self.out_channels == 0 {
            return Err(CudaError::Shape(format!("empty convolution {self:?}")));
        }
        for a in 0..3 {
            if 2 * self.padding[a] > self.kernel[a] {
                return Err(CudaError::Shape(format!(
                    "conv axis {a}: padding {} exceeds half the kernel {}",
                    self.padding[a], self.kernel[a]
                )));
            }
        }
        let x = self.input_dims()?;
        let y = self.output_dims()?;
        packed_strides(x)?;
        packed_strides(y)?;
        Ok(())
    }
}

fn to_i32(dims: [usize; 5]) -> Result<[i32; 5], CudaError> {
    let mut out = [0i32; 5];
    for (o, &d) in out.iter_mut().zip(&dims) {
        *o = i32::try_from(d).map_err(|_| {
            CudaError::Shape(format!(
                "extent {d} of {dims:?} exceeds cuDNN's 32-bit dims"
            ))
        })?;
    }
    Ok(out)
}

/// Row-major (fully packed) strides of a 5-D tensor, checked to fit cuDNN's 32-bit strides.
pub fn packed_strides(dims: [i32; 5]) -> Result<[i32; 5], CudaError> {
    let mut strides = [0i32; 5];
    let mut acc: i64 = 1;
    for a in (0..5).rev() {
        strides[a] = i32::try_from(acc).map_err(|_| {
            CudaError::Shape(format!(
                "tensor {dims:?} has more elements than cuDNN's 32-bit strides allow"
            ))
        })?;
        acc *= dims[a] as i64;
    }
    if acc > i32::MAX as i64 {
        return Err(CudaError::Shape(format!(
            "tensor {dims:?} has {acc} elements, beyond cuDNN's 2^31 limit"
        )));
    }
    Ok(strides)
}

#[cfg(feature = "device")]
/// cuDNN's storage type for a tensor dtype.
pub fn cudnn_dtype(dtype: DType) -> sys::cudnnDataType_t {
    match dtype {
        DType::F32 => sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
        DType::F16 => sys::cudnnDataType_t::CUDNN_DATA_HALF,
        DType::BF16 => sys::cudnnDataType_t::CUDNN_DATA_BFLOAT16,
    }
}

#[cfg(feature = "device")]
/// fp32 stays exact fp32 (no TF32); half types use tensor cores (fp32 accumulation either way).
pub fn cudnn_math(dtype: DType) -> sys::cudnnMathType_t {
    match dtype {
        DType::F32 => sys::cudnnMathType_t::CUDNN_FMA_MATH,
        DType::F16 | DType::BF16 => sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
    }
}

#[cfg(feature = "device")]
/// A cuDNN handle bound to the backend's stream.
pub struct Dnn {
    handle: sys::cudnnHandle_t,
}

#[cfg(feature = "device")]
impl Dnn {
    /// # Safety
    /// `stream` must be a live stream of the current context, outliving this handle.
    pub unsafe fn new(stream: sys::cudaStream_t) -> Result<Self, CudaError> {
        let handle = dnn::create_handle().map_err(CudaError::cudnn("cudnnCreate"))?;
        let dnn_handle = Dnn { handle };
        dnn::set_stream(handle, stream).map_err(CudaError::cudnn("cudnnSetStream"))?;
        Ok(dnn_handle)
    }

    pub fn handle(&self) -> sys::cudnnHandle_t {
        self.handle
    }
}

#[cfg(feature = "device")]
impl Drop for Dnn {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; the handle is gone either way.
        let _ = unsafe { dnn::destroy_handle(self.handle) };
    }
}

/// How `ConvPlan` picks cuDNN's forward algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlgoSearch {
    /// `cudnnGetConvolutionForwardAlgorithm_v7`: cuDNN's heuristic ranking, no GPU work.
    Heuristic,
    /// `cudnnFindConvolutionForwardAlgorithm`: cuDNN runs each candidate once on scratch memory
    /// it allocates and frees itself (at load time only), and the fastest that fits is kept.
    Measure,
}

impl AlgoSearch {
    /// The environment variable that overrides the default search: `heuristic` or `measure`.
    pub const ENV: &'static str = "LDM_CUDNN_ALGO";

    /// Parses the value of `LDM_CUDNN_ALGO`.
    pub fn parse(s: &str) -> Result<Self, CudaError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "heuristic" | "heuristics" => Ok(AlgoSearch::Heuristic),
            "measure" | "find" => Ok(AlgoSearch::Measure),
            other => Err(CudaError::Shape(format!(
                "{}='{other}': use heuristic or measure",
                Self::ENV
            ))),
        }
    }

    /// `Heuristic` unless `LDM_CUDNN_ALGO` says otherwise (a bad value is an error). On an H200
    /// (benches/RESULTS.md) measuring made the bf16/f16 UNet step ~5% slower and the f16 decode
    /// ~23% faster, and took 1.5-2 s more at load; per volume the heuristic was as fast or faster.
    pub fn from_env() -> Result<Self, CudaError> {
        match std::env::var(Self::ENV) {
            Ok(v) => Self::parse(&v),
            Err(_) => Ok(AlgoSearch::Heuristic),
        }
    }
}

/// Default upper bound of one convolution's cuDNN workspace, in MiB. At 2 GiB cuDNN can
/// transpose the decoder's full-resolution 128-channel tensors to NHWC for tensor-core kernels:
/// on an H200 the bf16 decode at the bundle size took 66 ms instead of 218 ms with 1 GiB, for
/// 0.68 GiB more workspace (benches/RESULTS.md); 4 GiB chose the same.
pub const DEFAULT_WORKSPACE_MIB: usize = 2048;
/// The environment variable that overrides it (whole MiB, 0 to 65536).
pub const WORKSPACE_ENV: &str = "LDM_CUDNN_WORKSPACE_MIB";

/// Parses a workspace bound in MiB into bytes.
pub fn parse_workspace_mib(s: &str) -> Result<usize, CudaError> {
    match s.trim().parse::<usize>() {
        Ok(mib) if mib <= 65_536 => Ok(mib << 20),
        _ => Err(CudaError::Shape(format!(
            "{WORKSPACE_ENV}='{s}': expected whole MiB between 0 and 65536"
        ))),
    }
}

/// The per-convolution workspace bound in bytes: `LDM_CUDNN_WORKSPACE_MIB` or 2 GiB.
pub fn workspace_limit_from_env() -> Result<usize, CudaError> {
    match std::env::var(WORKSPACE_ENV) {
        Ok(v) => parse_workspace_mib(&v),
        Err(_) => Ok(DEFAULT_WORKSPACE_MIB << 20),
    }
}

#[cfg(feature = "device")]
/// Whether a candidate algorithm may be used: it ran, fits the workspace, and for fp32 uses
/// plain FMA math (no TF32), which keeps fp32 within 1e-4 of the CPU.
fn acceptable(
    p: &sys::cudnnConvolutionFwdAlgoPerf_t,
    dtype: DType,
    workspace_limit: usize,
) -> bool {
    p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS
        && p.memory <= workspace_limit
        && (dtype != DType::F32 || p.mathType == sys::cudnnMathType_t::CUDNN_FMA_MATH)
}

#[cfg(feature = "device")]
/// Descriptors, algorithm and workspace size of one convolution shape, fixed at load time.
pub struct ConvPlan {
    pub spec: Conv3dSpec,
    pub dtype: DType,
    x: sys::cudnnTensorDescriptor_t,
    y: sys::cudnnTensorDescriptor_t,
    w: sys::cudnnFilterDescriptor_t,
    conv: sys::cudnnConvolutionDescriptor_t,
    pub algo: sys::cudnnConvolutionFwdAlgo_t,
    pub workspace_bytes: usize,
}

#[cfg(feature = "device")]
impl ConvPlan {
    /// Creates the descriptors and picks the first heuristic algorithm whose workspace fits
    /// `workspace_limit` bytes.
    pub fn new(
        dnn_handle: &Dnn,
        spec: Conv3dSpec,
        dtype: DType,
        workspace_limit: usize,
    ) -> Result<Self, CudaError> {
        Self::with_search(
            dnn_handle,
            spec,
            dtype,
            workspace_limit,
            AlgoSearch::Heuristic,
        )
    }

    /// Creates the descriptors and picks the algorithm as `search` says (the fastest that fits
    /// `workspace_limit` bytes). `Measure` runs convolutions: call it before graph capture.
    pub fn with_search(
        dnn_handle: &Dnn,
        spec: Conv3dSpec,
        dtype: DType,
        workspace_limit: usize,
        search: AlgoSearch,
    ) -> Result<Self, CudaError> {
        spec.validate()?;
        let xd = spec.input_dims()?;
        let yd = spec.output_dims()?;
        let wd = spec.filter_dims()?;
        let (xs, ys) = (packed_strides(xd)?, packed_strides(yd)?);
        let pads = to_i32_3(spec.padding)?;
        let strides = to_i32_3(spec.stride)?;
        let dilation = [1i32; 3];
        let ty = cudnn_dtype(dtype);
        let x = dnn::create_tensor_descriptor()
            .map_err(CudaError::cudnn("cudnnCreateTensorDescriptor"))?;
        // From here on `plan` owns the descriptors, so an early return destroys them.
        let mut plan = ConvPlan {
            spec,
            dtype,
            x,
            y: std::ptr::null_mut(),
            w: std::ptr::null_mut(),
            conv: std::ptr::null_mut(),
            algo: sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
            workspace_bytes: 0,
        };
        plan.y = dnn::create_tensor_descriptor()
            .map_err(CudaError::cudnn("cudnnCreateTensorDescriptor"))?;
        plan.w = dnn::create_filter_descriptor()
            .map_err(CudaError::cudnn("cudnnCreateFilterDescriptor"))?;
        plan.conv = dnn::create_convolution_descriptor()
            .map_err(CudaError::cudnn("cudnnCreateConvolutionDescriptor"))?;
        unsafe {
            dnn::set_tensornd_descriptor(plan.x, ty, 5, xd.as_ptr(), xs.as_ptr())
                .map_err(CudaError::cudnn("cudnnSetTensorNdDescriptor (input)"))?;
            dnn::set_tensornd_descriptor(plan.y, ty, 5, yd.as_ptr(), ys.as_ptr())
                .map_err(CudaError::cudnn("cudnnSetTensorNdDescriptor (output)"))?;
            dnn::set_filternd_descriptor(
                plan.w,
                ty,
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                5,
                wd.as_ptr(),
            )
            .map_err(CudaError::cudnn("cudnnSetFilterNdDescriptor"))?;
            dnn::set_convolutionnd_descriptor(
                plan.conv,
                3,
                pads.as_ptr(),
                strides.as_ptr(),
                dilation.as_ptr(),
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            )
            .map_err(CudaError::cudnn("cudnnSetConvolutionNdDescriptor"))?;
            dnn::set_convolution_math_type(plan.conv, cudnn_math(dtype))
                .map_err(CudaError::cudnn("cudnnSetConvolutionMathType"))?;
            let mut perf: [sys::cudnnConvolutionFwdAlgoPerf_t; 8] = std::mem::zeroed();
            let mut returned = 0i32;
            match search {
                AlgoSearch::Heuristic => dnn::get_convolution_forward_algorithm(
                    dnn_handle.handle,
                    plan.x,
                    plan.w,
                    plan.conv,
                    plan.y,
                    perf.len() as i32,
                    &mut returned,
                    perf.as_mut_ptr(),
                )
                .map_err(CudaError::cudnn("cudnnGetConvolutionForwardAlgorithm_v7"))?,
                AlgoSearch::Measure => sys::cudnnFindConvolutionForwardAlgorithm(
                    dnn_handle.handle,
                    plan.x,
                    plan.w,
                    plan.conv,
                    plan.y,
                    perf.len() as i32,
                    &mut returned,
                    perf.as_mut_ptr(),
                )
                .result()
                .map_err(CudaError::cudnn("cudnnFindConvolutionForwardAlgorithm"))?,
            }
            let returned = (returned.max(0) as usize).min(perf.len());
            // Both calls rank their results, fastest (or most promising) first.
            let choice = perf[..returned]
                .iter()
                .find(|p| acceptable(p, dtype, workspace_limit))
                .ok_or_else(|| {
                    CudaError::Shape(format!(
                        "cuDNN offers no forward algorithm for {spec:?} ({dtype:?}) within a {workspace_limit}-byte workspace"
                    ))
                })?;
            plan.algo = choice.algo;
            // The math the measurement (or heuristic) assumed, so the run uses the same kernel.
            dnn::set_convolution_math_type(plan.conv, choice.mathType)
                .map_err(CudaError::cudnn("cudnnSetConvolutionMathType"))?;
            plan.workspace_bytes = dnn::get_convolution_forward_workspace_size(
                dnn_handle.handle,
                plan.x,
                plan.w,
                plan.conv,
                plan.y,
                plan.algo,
            )
            .map_err(CudaError::cudnn("cudnnGetConvolutionForwardWorkspaceSize"))?;
        }
        Ok(plan)
    }

    /// y = conv(x, w), or y += conv(x, w) when `accumulate` (cuDNN's beta 1); the bias is a
    /// separate broadcast add.
    ///
    /// # Safety
    /// `x`, `w`, `y` and `workspace` must be device addresses of at least the sizes implied by
    /// `spec` and `workspace_bytes`, in `dtype`, valid until the stream reaches this call.
    pub unsafe fn forward(
        &self,
        dnn_handle: &Dnn,
        x: DevPtr,
        w: DevPtr,
        y: DevPtr,
        workspace: DevPtr,
        accumulate: bool,
    ) -> Result<(), CudaError> {
        let alpha = 1.0f32;
        let beta = if accumulate { 1.0f32 } else { 0.0f32 };
        dnn::convolution_forward(
            dnn_handle.handle,
            (&alpha as *const f32).cast(),
            self.x,
            x.0 as *const _,
            self.w,
            w.0 as *const _,
            self.conv,
            self.algo,
            workspace.0 as *mut _,
            self.workspace_bytes,
            (&beta as *const f32).cast(),
            self.y,
            y.0 as *mut _,
        )
        .map_err(CudaError::cudnn("cudnnConvolutionForward"))
    }
}

#[cfg(feature = "device")]
impl Drop for ConvPlan {
    fn drop(&mut self) {
        unsafe {
            if !self.conv.is_null() {
                let _ = dnn::destroy_convolution_descriptor(self.conv);
            }
            if !self.w.is_null() {
                let _ = dnn::destroy_filter_descriptor(self.w);
            }
            if !self.y.is_null() {
                let _ = dnn::destroy_tensor_descriptor(self.y);
            }
            if !self.x.is_null() {
                let _ = dnn::destroy_tensor_descriptor(self.x);
            }
        }
    }
}

#[cfg(feature = "device")]
fn to_i32_3(v: [usize; 3]) -> Result<[i32; 3], CudaError> {
    let mut out = [0i32; 3];
    for (o, &x) in out.iter_mut().zip(&v) {
        *o = i32::try_from(x).map_err(|_| CudaError::Shape(format!("{v:?} exceeds 32 bits")))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_keeps_extents() {
        let c = Conv3dSpec::same(1, 256, 256, [36, 44, 28], 3);
        assert_eq!(c.out_dims().unwrap(), [36, 44, 28]);
        assert_eq!(c.input_dims().unwrap(), [1, 256, 36, 44, 28]);
        assert_eq!(c.filter_dims().unwrap(), [256, 256, 3, 3, 3]);
        assert_eq!(c.output_dims().unwrap(), [1, 256, 36, 44, 28]);
        let p = Conv3dSpec::same(2, 8, 8, [36, 44, 28], 1);
        assert_eq!(p.padding, [0; 3]);
        assert_eq!(p.out_dims().unwrap(), [36, 44, 28]);
    }

    #[test]
    fn unet_downsample_halves_even_extents() {
        // Bundle latent 36x44x28 -> 18x22x14 -> 9x11x7, as the UNet's Downsample (stride 2, pad 1).
        let d = Conv3dSpec::down(1, 256, 256, [36, 44, 28]);
        assert_eq!(d.out_dims().unwrap(), [18, 22, 14]);
        let d = Conv3dSpec::down(1, 256, 256, [18, 22, 14]);
        assert_eq!(d.out_dims().unwrap(), [9, 11, 7]);
        // Odd extents: PyTorch's floor((9 + 2 - 3) / 2) + 1 = 5.
        assert_eq!(
            Conv3dSpec::down(1, 1, 1, [9, 11, 7]).out_dims().unwrap(),
            [5, 6, 4]
        );
    }

    #[test]
    fn strides_are_packed_ncdhw() {
        assert_eq!(
            packed_strides([1, 256, 36, 44, 28]).unwrap(),
            [256 * 36 * 44 * 28, 36 * 44 * 28, 44 * 28, 28, 1]
        );
        assert_eq!(
            packed_strides([2, 3, 4, 5, 6]).unwrap(),
            [360, 120, 30, 6, 1]
        );
        // The decoder's largest activation (64 x 144x176x112 = 181.6 M elements) fits cuDNN.
        assert!(packed_strides([1, 64, 144, 176, 112]).is_ok());
        assert!(
            packed_strides([8, 128, 144, 176, 112]).is_err(),
            "beyond 2^31 elements"
        );
    }

    #[test]
    fn flops_match_design_figures() {
        // One 3x3x3 256->256 conv at the latent resolution: 2 * 256*27 * 256*36*44*28.
        let c = Conv3dSpec::same(1, 256, 256, [36, 44, 28], 3);
        assert_eq!(c.flops().unwrap(), 2 * 256 * 27 * 256 * 36 * 44 * 28);
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(Conv3dSpec::same(1, 8, 8, [0, 4, 4], 3).out_dims().is_err());
        let mut c = Conv3dSpec::same(1, 8, 8, [4, 4, 4], 3);
        c.stride = [0, 1, 1];
        assert!(c.out_dims().is_err());
        let c = Conv3dSpec {
            padding: [0; 3],
            ..Conv3dSpec::same(1, 8, 8, [2, 4, 4], 3)
        };
        assert!(
            c.out_dims().is_err(),
            "kernel larger than the unpadded input"
        );
        assert!(Conv3dSpec::same(0, 8, 8, [4, 4, 4], 3).validate().is_err());
        assert!(Conv3dSpec::same(1, 8, 8, [4, 4, 4], 3).validate().is_ok());
        assert!(Conv3dSpec::same(1, usize::MAX, 8, [4, 4, 4], 3)
            .input_dims()
            .is_err());
    }

    #[cfg(feature = "device")]
    #[test]
    fn dtype_mappings() {
        assert_eq!(
            cudnn_dtype(DType::F32),
            sys::cudnnDataType_t::CUDNN_DATA_FLOAT
        );
        assert_eq!(
            cudnn_dtype(DType::F16),
            sys::cudnnDataType_t::CUDNN_DATA_HALF
        );
        assert_eq!(
            cudnn_dtype(DType::BF16),
            sys::cudnnDataType_t::CUDNN_DATA_BFLOAT16
        );
        assert_eq!(cudnn_math(DType::F32), sys::cudnnMathType_t::CUDNN_FMA_MATH);
        assert_eq!(
            cudnn_math(DType::BF16),
            sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH
        );
    }

    #[test]
    fn algo_search_parses_and_rejects() {
        assert_eq!(AlgoSearch::parse("measure").unwrap(), AlgoSearch::Measure);
        assert_eq!(AlgoSearch::parse(" Find ").unwrap(), AlgoSearch::Measure);
        assert_eq!(
            AlgoSearch::parse("heuristic").unwrap(),
            AlgoSearch::Heuristic
        );
        let e = AlgoSearch::parse("fastest").unwrap_err();
        assert!(e.to_string().contains(AlgoSearch::ENV), "{e}");
    }

    #[test]
    fn workspace_bound_parses_mib() {
        assert_eq!(parse_workspace_mib("2048").unwrap(), 2 << 30);
        assert_eq!(parse_workspace_mib(" 0 ").unwrap(), 0);
        for bad in ["", "-1", "1.5", "65537", "lots"] {
            let e = parse_workspace_mib(bad).unwrap_err();
            assert!(e.to_string().contains(WORKSPACE_ENV), "{e}");
        }
    }

    #[cfg(feature = "device")]
    #[test]
    fn fp32_never_takes_tensor_core_math() {
        // SAFETY: a plain C struct; all-zero is a valid bit pattern for it.
        let mut p: sys::cudnnConvolutionFwdAlgoPerf_t = unsafe { std::mem::zeroed() };
        p.status = sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS;
        p.memory = 100;
        p.mathType = sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH;
        assert!(!acceptable(&p, DType::F32, 1000));
        assert!(acceptable(&p, DType::BF16, 1000));
        assert!(!acceptable(&p, DType::BF16, 99));
        p.mathType = sys::cudnnMathType_t::CUDNN_FMA_MATH;
        assert!(acceptable(&p, DType::F32, 1000));
        p.status = sys::cudnnStatus_t::CUDNN_STATUS_NOT_SUPPORTED;
        assert!(!acceptable(&p, DType::F32, 1000));
    }
}
