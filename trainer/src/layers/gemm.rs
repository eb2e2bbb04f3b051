//! Row-major SGEMM helpers over `matrixmultiply` (multi-threaded, deterministic: each output
//! element is owned by one thread and reduced in a fixed order).

/// `C[m,n] = alpha * A[m,k] * B[k,n] + beta * C`, each matrix given by a slice and its row and
/// column strides (in elements). When `beta == 0` C is not read.
///
/// Panics if a stride pattern reaches outside its slice: that is an internal invariant of this
/// crate's layers (their lengths are validated before calling), never input-driven.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_strided(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    rsa: usize,
    csa: usize,
    b: &[f32],
    rsb: usize,
    csb: usize,
    beta: f32,
    c: &mut [f32],
    rsc: usize,
    csc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let span = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs + 1;
    assert!(c.len() >= span(m, n, rsc, csc), "sgemm: C out of bounds");
    if k == 0 {
        for i in 0..m {
            for j in 0..n {
                let v = &mut c[i * rsc + j * csc];
                *v = if beta == 0.0 { 0.0 } else { *v * beta };
            }
        }
        return;
    }
    assert!(a.len() >= span(m, k, rsa, csa), "sgemm: A out of bounds");
    assert!(b.len() >= span(k, n, rsb, csb), "sgemm: B out of bounds");
    // SAFETY: the asserts above prove every index the kernel touches is inside its slice; C does
    // not alias A or B because it is a distinct `&mut` borrow.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            rsc as isize,
            csc as isize,
        );
    }
}

/// `C = A * B + beta*C` with A `[m,k]`, B `[k,n]`, C `[m,n]`, all dense row-major.
pub fn gemm_nn(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], beta: f32, c: &mut [f32]) {
    sgemm_strided(m, k, n, 1.0, a, k, 1, b, n, 1, beta, c, n, 1);
}

/// `C = A * B^T + beta*C` with A `[m,k]`, B `[n,k]`.
pub fn gemm_nt(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], beta: f32, c: &mut [f32]) {
    sgemm_strided(m, k, n, 1.0, a, k, 1, b, 1, k, beta, c, n, 1);
}

/// `C = A^T * B + beta*C` with A `[k,m]`, B `[k,n]`.
pub fn gemm_tn(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], beta: f32, c: &mut [f32]) {
    sgemm_strided(m, k, n, 1.0, a, 1, m, b, n, 1, beta, c, n, 1);
}

/// Minimum work (m*k*n multiply-adds) before [`par_sgemm`] splits over threads.
const PAR_MIN_WORK: usize = 1 << 18;

/// [`sgemm_strided`] with C's rows split into blocks computed in parallel (rayon). Each output
/// element is computed by exactly one block with the same reduction order as the serial call,
/// so the result does not depend on the thread count. Requires `csc == 1` to split (falls back
/// to the serial call otherwise).
#[allow(clippy::too_many_arguments)]
pub fn par_sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    rsa: usize,
    csa: usize,
    b: &[f32],
    rsb: usize,
    csb: usize,
    beta: f32,
    c: &mut [f32],
    rsc: usize,
    csc: usize,
) {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads();
    if csc != 1 || threads < 2 || m < 16 || m.saturating_mul(k).saturating_mul(n) < PAR_MIN_WORK || rsc < n {
        sgemm_strided(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc);
        return;
    }
    // Blocks of rows, a multiple of 8 (the kernel's row tile), about 4 per thread.
    let mb = m.div_ceil(threads * 4).div_ceil(8) * 8;
    let rows_len = (m - 1) * rsc + n;
    c[..rows_len].par_chunks_mut(mb * rsc).enumerate().for_each(|(blk, cb)| {
        let i0 = blk * mb;
        let rows = mb.min(m - i0);
        sgemm_strided(rows, k, n, alpha, &a[i0 * rsa..], rsa, csa, b, rsb, csb, beta, cb, rsc, 1);
    });
}
