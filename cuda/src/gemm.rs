//! GEMMs through cuBLAS (column-major, fp32 accumulation) for the linear layers, expressed on
//! our row-major / channel-major buffers without any transpose kernel:
//! - `GemmSpec::linear`: Y[rows, out] = X[rows, in] W^T (the time-embedding MLP, the ResBlock's
//!   embedding projection);
//! - `GemmSpec::channel_projection`: Y[b] (out x tokens) = W (out x in) X[b] (in x tokens), a 1x1
//!   projection of an NCDHW tensor that stays channel-major (to_q / to_k / to_v, 1x1 convs).
//!
//! The mapping is plain data, verified on the host against naive loops through a reference
//! column-major GEMM with BLAS semantics. `Blas` owns a cuBLAS handle with a fixed workspace, so
//! that GEMMs can be captured into a CUDA graph without allocations.

#[cfg(feature = "device")]
use cudarc::cublas::{result as blas, sys};
#[cfg(feature = "device")]
use ldm_weights::DType;

#[cfg(feature = "device")]
use super::arena::DevPtr;
use super::error::CudaError;

/// Whether an operand is used as stored (column-major) or transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    N,
    T,
}

/// One (strided-batched) column-major GEMM: C = op(A) op(B), C is m x n, op(A) m x k.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmSpec {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub op_a: Op,
    pub op_b: Op,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    pub batch: usize,
    /// Elements between consecutive batch matrices (0: the same matrix for every batch).
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
}

impl GemmSpec {
    /// Y[rows, out] = X[rows, in] W^T with W stored [out, in] (PyTorch Linear), all row-major.
    /// Column-major view: Y^T (out x rows) = W' (out x in) X^T (in x rows), A = W buffer (op T).
    pub fn linear(rows: usize, in_features: usize, out_features: usize) -> Result<Self, CudaError> {
        let s = GemmSpec {
            m: out_features,
            n: rows,
            k: in_features,
            op_a: Op::T,
            op_b: Op::N,
            lda: in_features,
            ldb: in_features,
            ldc: out_features,
            batch: 1,
            stride_a: 0,
            stride_b: 0,
            stride_c: 0,
        };
        s.validate()?;
        Ok(s)
    }

    /// Y[b] (out x tokens) = W (out x in) X[b] (in x tokens), all row-major per sample with
    /// `x_batch_stride` / `y_batch_stride` elements between samples. Column-major view:
    /// Y[b]^T (tokens x out) = X[b]^T (tokens x in) W^T (in x out), A = X buffer, B = W buffer.
    pub fn channel_projection(
        batch: usize,
        tokens: usize,
        in_channels: usize,
        out_channels: usize,
        x_batch_stride: usize,
        y_batch_stride: usize,
    ) -> Result<Self, CudaError> {
        let s = GemmSpec {
            m: tokens,
            n: out_channels,
            k: in_channels,
            op_a: Op::N,
            op_b: Op::N,
            lda: tokens,
            ldb: in_channels,
            ldc: tokens,
            batch,
            stride_a: x_batch_stride,
            stride_b: 0,
            stride_c: y_batch_stride,
        };
        s.validate()?;
        Ok(s)
    }

    /// Rows x columns of op(A) and op(B) as stored (column-major).
    fn stored_a(&self) -> (usize, usize) {
        match self.op_a {
            Op::N => (self.m, self.k),
            Op::T => (self.k, self.m),
        }
    }

    fn stored_b(&self) -> (usize, usize) {
        match self.op_b {
            Op::N => (self.k, self.n),
            Op::T => (self.n, self.k),
        }
    }

    /// Checks leading dimensions and cuBLAS's 32-bit int arguments.
    pub fn validate(&self) -> Result<(), CudaError> {
        if self.m == 0 || self.n == 0 || self.k == 0 || self.batch == 0 {
            return Err(CudaError::Shape(format!("empty GEMM {self:?}")));
        }
        let (ar, _) = self.stored_a();
        let (br, _) = self.stored_b();
        if self.lda < ar || self.ldb < br || self.ldc < self.m {
            return Err(CudaError::Shape(format!(
                "leading dimension too small in {self:?}"
            )));
        }
        for v in [
            self.m, self.n, self.k, self.lda, self.ldb, self.ldc, self.batch,
        ] {
            if v > i32::MAX as usize {
                return Err(CudaError::Shape(format!(
                    "{v} exceeds cuBLAS's 32-bit sizes in {self:?}"
                )));
            }
        }
        Ok(())
    }

    /// Elements each operand must hold (last batch's end), for bounds checks against regions.
    pub fn min_elements(&self) -> (usize, usize, usize) {
        let (_, ac) = self.stored_a();
        let (_, bc) = self.stored_b();
        let last = self.batch - 1;
        (
            last * self.stride_a + self.lda * (ac - 1) + self.stored_a().0,
            last * self.stride_b + self.ldb * (bc - 1) + self.stored_b().0,
            last * self.stride_c + self.ldc * (self.n - 1) + self.m,
        )
    }

    /// FLOPs (2 x multiply-adds).
    pub fn flops(&self) -> u64 {
        2 * self.m as u64 * self.n as u64 * self.k as u64 * self.batch as u64
    }
}

/// Reference column-major GEMM with BLAS semantics (host, f64 accumulation): the oracle for the
/// mapping tests, and a readable statement of what cuBLAS is asked to compute.
pub fn reference_gemm(s: &GemmSpec, a: &[f32], b: &[f32], c: &mut [f32]) {
    for bt in 0..s.batch {
        for j in 0..s.n {
            for i in 0..s.m {
                let mut acc = 0f64;
                for p in 0..s.k {
                    let av = match s.op_a {
                        Op::N => a[bt * s.stride_a + i + p * s.lda],
                        Op::T => a[bt * s.stride_a + p + i * s.lda],
                    };
                    let bv = match s.op_b {
                        Op::N => b[bt * s.stride_b + p + j * s.ldb],
                        Op::T => b[bt * s.stride_b + j + p * s.ldb],
                    };
                    acc += av as f64 * bv as f64;
                }
                c[bt * s.stride_c + i + j * s.ldc] = acc as f32;
            }
        }
    }
}

#[cfg(feature = "device")]
/// cuBLAS's storage type of a dtype.
pub fn cublas_dtype(dtype: DType) -> sys::cudaDataType {
    match dtype {
        DType::F32 => sys::cudaDataType::CUDA_R_32F,
        DType::F16 => sys::cudaDataType::CUDA_R_16F,
        DType::BF16 => sys::cudaDataType::CUDA_R_16BF,
    }
}

#[cfg(feature = "device")]
/// fp32: pedantic fp32 (no TF32, parity with the CPU within 1e-4); fp16/bf16: tensor cores with
/// fp32 accumulation.
pub fn cublas_compute(dtype: DType) -> sys::cublasComputeType_t {
    match dtype {
        DType::F32 => sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_PEDANTIC,
        DType::F16 | DType::BF16 => sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
    }
}

#[cfg(feature = "device")]
fn cublas_op(op: Op) -> sys::cublasOperation_t {
    match op {
        Op::N => sys::cublasOperation_t::CUBLAS_OP_N,
        Op::T => sys::cublasOperation_t::CUBLAS_OP_T,
    }
}

#[cfg(feature = "device")]
/// A cuBLAS handle on the backend's stream with a caller-provided workspace.
pub struct Blas {
    handle: sys::cublasHandle_t,
}

/// Workspace cuBLAS gets from the arena (its recommended size for Hopper is 32 MiB).
pub const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;

#[cfg(feature = "device")]
impl Blas {
    /// # Safety
    /// `stream` must be a live stream of the current context, outliving this handle.
    pub unsafe fn new(stream: sys::cudaStream_t) -> Result<Self, CudaError> {
        let handle = blas::create_handle().map_err(CudaError::cublas("cublasCreate"))?;
        let b = Blas { handle };
        blas::set_stream(handle, stream).map_err(CudaError::cublas("cublasSetStream"))?;
        Ok(b)
    }

    /// Gives cuBLAS a fixed workspace so that it never allocates (required for graph capture).
    ///
    /// # Safety
    /// `workspace` must be a device region of `bytes` bytes that outlives every GEMM.
    pub unsafe fn set_workspace(&self, workspace: DevPtr, bytes: usize) -> Result<(), CudaError> {
        sys::cublasSetWorkspace_v2(self.handle, workspace.0 as *mut _, bytes)
            .result()
            .map_err(CudaError::cublas("cublasSetWorkspace"))
    }

    /// C = alpha op(A) op(B) + beta C for all batches; A, B, C in `dtype`.
    ///
    /// # Safety
    /// `a`, `b`, `c` must be device addresses holding at least `spec.min_elements()` elements.
    pub unsafe fn gemm(
        &self,
        spec: &GemmSpec,
        dtype: DType,
        a: DevPtr,
        b: DevPtr,
        c: DevPtr,
        beta: f32,
    ) -> Result<(), CudaError> {
        spec.validate()?;
        let alpha = 1.0f32;
        let ty = cublas_dtype(dtype);
        blas::gemm_strided_batched_ex(
            self.handle,
            cublas_op(spec.op_a),
            cublas_op(spec.op_b),
            spec.m as i32,
            spec.n as i32,
            spec.k as i32,
            (&alpha as *const f32).cast(),
            a.0 as *const _,
            ty,
            spec.lda as i32,
            spec.stride_a as i64,
            b.0 as *const _,
            ty,
            spec.ldb as i32,
            spec.stride_b as i64,
            (&beta as *const f32).cast(),
            c.0 as *mut _,
            ty,
            spec.ldc as i32,
            spec.stride_c as i64,
            spec.batch as i32,
            cublas_compute(dtype),
            sys::cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
        )
        .map_err(CudaError::cublas("cublasGemmStridedBatchedEx"))
    }
}

#[cfg(feature = "device")]
impl Drop for Blas {
    fn drop(&mut self) {
        let _ = unsafe { blas::destroy_handle(self.handle) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                (((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 16) % 17) as f32
                    - 8.0
            })
            .collect()
    }

    #[test]
    fn linear_mapping_equals_row_major_linear() {
        let (rows, inf, outf) = (3, 5, 4);
        let x = data(rows * inf, 1); // [rows, in]
        let w = data(outf * inf, 2); // [out, in]
        let s = GemmSpec::linear(rows, inf, outf).unwrap();
        let mut y = vec![0f32; rows * outf];
        reference_gemm(&s, &w, &x, &mut y);
        for r in 0..rows {
            for o in 0..outf {
                let want: f32 = (0..inf).map(|i| x[r * inf + i] * w[o * inf + i]).sum();
                assert_eq!(y[r * outf + o], want, "row {r} out {o}");
            }
        }
        let (na, nb, nc) = s.min_elements();
        assert_eq!((na, nb, nc), (outf * inf, rows * inf, rows * outf));
    }

    #[test]
    fn channel_projection_keeps_channel_major_layout() {
        let (batch, tokens, cin, cout) = (2, 7, 3, 5);
        // Output written into a stacked [batch, 3 * cout, tokens] buffer (q, k, v side by side).
        let x = data(batch * cin * tokens, 3);
        let w = data(cout * cin, 4);
        let s =
            GemmSpec::channel_projection(batch, tokens, cin, cout, cin * tokens, 3 * cout * tokens)
                .unwrap();
        let mut y = vec![f32::NAN; batch * 3 * cout * tokens];
        reference_gemm(&s, &x, &w, &mut y);
        for b in 0..batch {
            for o in 0..cout {
                for t in 0..tokens {
                    let want: f32 = (0..cin)
                        .map(|c| w[o * cin + c] * x[(b * cin + c) * tokens + t])
                        .sum();
                    assert_eq!(y[b * 3 * cout * tokens + o * tokens + t], want);
                }
            }
            // The k and v thirds are untouched.
            assert!(
                y[b * 3 * cout * tokens + cout * tokens..(b + 1) * 3 * cout * tokens]
                    .iter()
                    .all(|v| v.is_nan())
            );
        }
        let (na, nb, nc) = s.min_elements();
        assert_eq!(na, batch * cin * tokens);
        assert_eq!(nb, cout * cin);
        assert_eq!(nc, (batch - 1) * 3 * cout * tokens + cout * tokens);
    }

    #[test]
    fn invalid_gemms_are_rejected() {
        assert!(GemmSpec::linear(0, 4, 4).is_err());
        assert!(GemmSpec::channel_projection(1, 10, 4, 4, 40, 40).is_ok());
        let mut s = GemmSpec::linear(2, 4, 4).unwrap();
        s.lda = 3;
        assert!(s.validate().is_err());
        assert!(GemmSpec::linear(1 << 31, 4, 4).is_err());
        assert_eq!(
            GemmSpec::linear(2, 256, 1024).unwrap().flops(),
            2 * 2 * 256 * 1024
        );
    }

    #[cfg(feature = "device")]
    #[test]
    fn dtype_mappings() {
        assert_eq!(cublas_dtype(DType::BF16), sys::cudaDataType::CUDA_R_16BF);
        assert_eq!(
            cublas_compute(DType::F32),
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_PEDANTIC
        );
        assert_eq!(
            cublas_compute(DType::F16),
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F
        );
    }
}
