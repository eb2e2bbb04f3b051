//! Every microkernel this CPU runs, on GEMM shapes with edge tiles (rows < MR, columns < NR) and
//! depths that are not multiples of KC, against an f64 reference; and the kernel selection.

use super::*;

/// Pseudo-random values in [-1, 1) (a fixed LCG: the test is reproducible).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `C = A[m,k] * B[k,n]` through packed A, B packed in `T::NR` panels per KC block, and the
/// microkernel of `t`; C starts at `c0` and has row stride `ldc >= n`.
#[allow(clippy::too_many_arguments)]
fn gemm<T: Tile>(t: T, a: &[f32], b: &[f32], m: usize, k: usize, n: usize, ldc: usize, c0: f32) -> Vec<f32> {
    let nr = T::NR;
    let pa = PackedA::pack(a, m, k);
    let mut c = vec![c0; m * ldc];
    let panels = n.div_ceil(nr);
    let mut bp = vec![0f32; KC * nr];
    let mut k0 = 0;
    while k0 < k {
        let kc = KC.min(k - k0);
        for jp in 0..panels {
            bp.fill(f32::NAN);
            for kk in 0..kc {
                for j in 0..nr {
                    let col = jp * nr + j;
                    bp[kk * nr + j] = if col < n { b[(k0 + kk) * n + col] } else { 0.0 };
                }
            }
            for p in 0..m.div_ceil(MR) {
                let rows = MR.min(m - p * MR);
                let cols = nr.min(n - jp * nr);
                microkernel(t, kc, rows, pa.panel(k0, kc, p), &bp, &mut c[p * MR * ldc + jp * nr..], ldc, cols);
            }
        }
        k0 += kc;
    }
    c
}

fn check<T: Tile>(t: T) {
    // (m, k, n): full tiles, edge rows and columns, K across several KC blocks with a remainder.
    let shapes = [(8, 128, 96), (7, 150, 21), (1, 1, 1), (13, 300, 53), (16, 257, 100), (3, 5, 31), (24, 129, 24)];
    for (i, &(m, k, n)) in shapes.iter().enumerate() {
        let a = values(m * k, 2 * i as u64);
        let b = values(k * n, 2 * i as u64 + 1);
        let ldc = n + 3;
        let c = gemm(t, &a, &b, m, k, n, ldc, 0.5);
        for r in 0..m {
            for j in 0..ldc {
                let got = c[r * ldc + j];
                if j >= n {
                    // Columns past the tile are never written.
                    assert_eq!(got, 0.5, "{}: m {m} k {k} n {n}: wrote ({r},{j})", T::KERNEL);
                    continue;
                }
                let want: f64 = 0.5 + (0..k).map(|kk| a[r * k + kk] as f64 * b[kk * n + j] as f64).sum::<f64>();
                let scale: f64 = (0..k).map(|kk| (a[r * k + kk] as f64 * b[kk * n + j] as f64).abs()).sum::<f64>() + 1.0;
                assert!(((got as f64) - want).abs() <= 1e-6 * scale, "{}: m {m} k {k} n {n} at ({r},{j}): {got} vs {want}", T::KERNEL);
            }
        }
    }
}

#[test]
fn every_available_kernel_matches_f64_reference() {
    let mut ran = Vec::new();
    for k in Kernel::ALL {
        if k.available() {
            with_tile!(k, t => {
                assert_eq!(<_ as TileKernel>::kernel(&t), k);
                check(t)
            });
            ran.push(k);
        }
    }
    assert!(ran.contains(&Kernel::Portable));
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        assert!(ran.contains(&Kernel::Avx2));
    }
}

/// The kernel a tile value stands for (checks that `with_tile!` binds the kernel it was given).
trait TileKernel {
    fn kernel(&self) -> Kernel;
}
impl<T: Tile> TileKernel for T {
    fn kernel(&self) -> Kernel {
        T::KERNEL
    }
}

#[test]
fn kernel_names_resolve() {
    use std::ffi::OsStr;
    assert_eq!(resolve(None), Ok(Kernel::detect()));
    assert_eq!(resolve(Some(OsStr::new(""))), Ok(Kernel::detect()));
    assert_eq!(resolve(Some(OsStr::new("portable"))), Ok(Kernel::Portable));
    assert_eq!(resolve(Some(OsStr::new(" Portable "))), Ok(Kernel::Portable));
    let bad = resolve(Some(OsStr::new("sse9"))).unwrap_err();
    assert!(bad.contains("sse9") && bad.contains("avx2"), "{bad}");
    for k in Kernel::ALL {
        let r = resolve(Some(OsStr::new(k.name())));
        if k.available() {
            assert_eq!(r, Ok(k));
        } else {
            let e = r.unwrap_err();
            assert!(e.contains(k.name()) && e.contains("needs"), "{e}");
        }
        assert_eq!(k.nc() % k.nr(), 0);
        assert!(k.nr() <= NR_MAX && k.nc() <= NC_MAX);
    }
    #[cfg(target_arch = "x86_64")]
    assert!(resolve(Some(OsStr::new("neon"))).is_err());
}

#[test]
fn tile_constants_match_kernel_table() {
    fn same<T: Tile>(_: T) {
        assert_eq!(T::NR, T::KERNEL.nr());
        assert_eq!(T::NC, T::KERNEL.nc());
    }
    for k in Kernel::ALL {
        with_tile!(k, t => same(t));
    }
}
