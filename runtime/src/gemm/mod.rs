//! The GEMM core of every convolution, linear layer and attention product: weights pre-packed
//! once at load into MR-row panels per KC block, and one register-tile microkernel per CPU kind
//! (AVX-512, AVX2+FMA, NEON, portable) that accumulates `C += A * B` over one packed B panel.
//! The kernel is chosen once at load: the best one the CPU has, or the one named by the
//! environment variable `LDM_CPU_KERNEL` (`avx512`, `avx2`, `neon`, `portable`).
//!
//! Every kernel reads the same A layout (MR = 8 rows per panel, KC-deep blocks, also unpacked by
//! the CUDA backend); the B panel width NR and the packed block width NC belong to the kernel.

use std::sync::OnceLock;

use crate::error::RuntimeError;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;
mod portable;

#[cfg(target_arch = "x86_64")]
pub use avx2::Avx2;
#[cfg(target_arch = "x86_64")]
pub use avx512::Avx512;
#[cfg(target_arch = "aarch64")]
pub use neon::Neon;
pub use portable::Portable;

/// Rows of every packed A panel (output channels); kernels with shorter register tiles walk a
/// panel in row groups.
pub const MR: usize = 8;
/// Depth of one packed block.
pub const KC: usize = 128;
/// The widest B panel of any kernel.
pub const NR_MAX: usize = 32;
/// The widest packed B block of any kernel (sizes the per-thread pack buffers).
pub const NC_MAX: usize = 512;

/// The environment variable that forces a kernel.
pub const KERNEL_ENV: &str = "LDM_CPU_KERNEL";

/// A CPU microkernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// 8x32 tile of 16-lane zmm FMAs (x86-64 with AVX-512F).
    Avx512,
    /// 4x24 tile of 8-lane ymm FMAs (x86-64 with AVX2 and FMA).
    Avx2,
    /// 8x12 tile of 4-lane q-register FMAs (aarch64).
    Neon,
    /// 8x32 tile in plain Rust (any CPU).
    Portable,
}

impl Kernel {
    /// Every kernel, best first.
    pub const ALL: [Kernel; 4] = [Kernel::Avx512, Kernel::Avx2, Kernel::Neon, Kernel::Portable];

    /// The name `LDM_CPU_KERNEL` takes.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512 => "avx512",
            Kernel::Avx2 => "avx2",
            Kernel::Neon => "neon",
            Kernel::Portable => "portable",
        }
    }

    pub fn parse(s: &str) -> Option<Kernel> {
        Kernel::ALL.into_iter().find(|k| k.name() == s.trim().to_ascii_lowercase())
    }

    /// What the kernel needs from the CPU, for error messages.
    fn needs(self) -> &'static str {
        match self {
            Kernel::Avx512 => "an x86-64 CPU with AVX-512F",
            Kernel::Avx2 => "an x86-64 CPU with AVX2 and FMA",
            Kernel::Neon => "an aarch64 CPU",
            Kernel::Portable => "nothing",
        }
    }

    /// Whether this CPU can run the kernel.
    pub fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => Avx512::new().is_some(),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => Avx2::new().is_some(),
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => Neon::new().is_some(),
            Kernel::Portable => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The best kernel this CPU can run.
    pub fn detect() -> Kernel {
        Kernel::ALL.into_iter().find(|k| k.available()).unwrap_or(Kernel::Portable)
    }

    /// Width of the kernel's B panels (output voxels per register tile).
    pub fn nr(self) -> usize {
        match self {
            Kernel::Avx512 | Kernel::Portable => 32,
            Kernel::Avx2 => 24,
            Kernel::Neon => 12,
        }
    }

    /// Columns per packed B block (a multiple of `nr`).
    pub fn nc(self) -> usize {
        match self {
            Kernel::Avx512 | Kernel::Portable => 512,
            Kernel::Avx2 => 480,
            Kernel::Neon => 480,
        }
    }
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Resolves `LDM_CPU_KERNEL` against the CPU.
fn resolve(var: Option<&std::ffi::OsStr>) -> Result<Kernel, String> {
    let Some(v) = var else { return Ok(Kernel::detect()) };
    let Some(s) = v.to_str() else { return Err(format!("{KERNEL_ENV} is not valid UTF-8")) };
    if s.trim().is_empty() {
        return Ok(Kernel::detect());
    }
    let Some(k) = Kernel::parse(s) else {
        return Err(format!("{KERNEL_ENV}={s:?} names no kernel (avx512, avx2, neon or portable)"));
    };
    if !k.available() {
        return Err(format!("{KERNEL_ENV}={} needs {}, which this CPU is not", k.name(), k.needs()));
    }
    Ok(k)
}

static SELECTED: OnceLock<Result<Kernel, String>> = OnceLock::new();

fn selection() -> &'static Result<Kernel, String> {
    SELECTED.get_or_init(|| resolve(std::env::var_os(KERNEL_ENV).as_deref()))
}

/// Selects the microkernel once (call at load so that `generate` never initialises anything):
/// the one `LDM_CPU_KERNEL` names, else the best the CPU has. A kernel that does not exist or
/// that the CPU cannot run is an `InvalidOption` error.
pub fn init() -> Result<Kernel, RuntimeError> {
    selection().clone().map_err(RuntimeError::InvalidOption)
}

/// The selected kernel. Where `init` reported an error (and the caller went on regardless),
/// this is the best kernel the CPU has.
pub fn selected() -> Kernel {
    match selection() {
        Ok(k) => *k,
        Err(_) => Kernel::detect(),
    }
}

/// A microkernel: a value of a `Tile` type proves that the CPU runs it (only `new` makes one).
pub trait Tile: Copy + Send + Sync {
    const KERNEL: Kernel;
    /// Width of a B panel.
    const NR: usize;
    /// Columns per packed B block.
    const NC: usize;

    /// `C[rows, cols] += A * B` over `kc`: `a` a packed `kc x MR` panel, `b` a packed `kc x NR`
    /// panel, `c` row-major with stride `ldc`.
    ///
    /// # Safety
    /// `1 <= rows <= MR`, `1 <= cols <= NR`, `a` holds `kc * MR` floats, `b` `kc * NR`, and `c`
    /// `(rows - 1) * ldc + cols`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run(self, kc: usize, rows: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, cols: usize);
}

/// `C[rows, cols] += A_panel * B_panel` on tile `t` (see `Tile::run`), bounds checked.
#[inline]
#[allow(clippy::too_many_arguments)]
pub fn microkernel<T: Tile>(t: T, kc: usize, rows: usize, a: &[f32], b: &[f32], c: &mut [f32], ldc: usize, cols: usize) {
    assert!((1..=MR).contains(&rows) && (1..=T::NR).contains(&cols));
    assert!(a.len() >= kc * MR && b.len() >= kc * T::NR);
    assert!(c.len() >= (rows - 1) * ldc + cols);
    // SAFETY: bounds checked above; `t` exists only where the CPU runs its kernel.
    unsafe { t.run(kc, rows, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), ldc, cols) }
}

/// Runs `$body` with `$t` bound to the tile value of kernel `$k` (the portable tile where this
/// build or CPU lacks `$k`). Each arm is a separate monomorphisation of `$body`.
#[macro_export]
#[doc(hidden)]
macro_rules! with_tile {
    ($k:expr, $t:ident => $body:expr) => {{
        let kernel: $crate::gemm::Kernel = $k;
        'tile: {
            #[cfg(target_arch = "x86_64")]
            if let ($crate::gemm::Kernel::Avx512, Some($t)) = (kernel, $crate::gemm::Avx512::new()) {
                break 'tile ($body);
            }
            #[cfg(target_arch = "x86_64")]
            if let ($crate::gemm::Kernel::Avx2, Some($t)) = (kernel, $crate::gemm::Avx2::new()) {
                break 'tile ($body);
            }
            #[cfg(target_arch = "aarch64")]
            if let ($crate::gemm::Kernel::Neon, Some($t)) = (kernel, $crate::gemm::Neon::new()) {
                break 'tile ($body);
            }
            let _ = kernel;
            let $t = $crate::gemm::Portable;
            $body
        }
    }};
}
pub use with_tile;

/// A weight matrix `[M, K]` packed for the microkernels: for each KC block (in order), the
/// `ceil(M / MR)` panels of `kc x MR` values (row-padded with zeros).
#[derive(Debug, Clone)]
pub struct PackedA {
    pub m: usize,
    pub k: usize,
    pub m_pad: usize,
    pub data: Vec<f32>,
}

impl PackedA {
    /// Packs a row-major `[m, k]` matrix.
    pub fn pack(w: &[f32], m: usize, k: usize) -> PackedA {
        let m_pad = m.div_ceil(MR) * MR;
        let mut data = vec![0f32; m_pad * k];
        let mut k0 = 0;
        while k0 < k {
            let kc = KC.min(k - k0);
            let block = &mut data[k0 * m_pad..(k0 + kc) * m_pad];
            for p in 0..m_pad / MR {
                let panel = &mut block[p * kc * MR..(p + 1) * kc * MR];
                for kk in 0..kc {
                    for r in 0..MR {
                        let row = p * MR + r;
                        if row < m {
                            panel[kk * MR + r] = w[row * k + k0 + kk];
                        }
                    }
                }
            }
            k0 += kc;
        }
        PackedA { m, k, m_pad, data }
    }

    /// The packed panel `p` (rows `p*MR..`) of the KC block starting at `k0` with depth `kc`.
    #[inline]
    pub fn panel(&self, k0: usize, kc: usize, p: usize) -> &[f32] {
        let base = k0 * self.m_pad + p * kc * MR;
        &self.data[base..base + kc * MR]
    }

    /// The row-major `[m, k]` matrix back (inverse of `pack`).
    pub fn unpack(&self) -> Vec<f32> {
        let (m, k) = (self.m, self.k);
        let mut w = vec![0f32; m * k];
        let mut k0 = 0;
        while k0 < k {
            let kc = KC.min(k - k0);
            for row in 0..m {
                let panel = self.panel(k0, kc, row / MR);
                for kk in 0..kc {
                    w[row * k + k0 + kk] = panel[kk * MR + row % MR];
                }
            }
            k0 += kc;
        }
        w
    }

    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }
}

#[cfg(test)]
mod tests;
