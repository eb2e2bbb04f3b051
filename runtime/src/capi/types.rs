//! `#[repr(C)]` mirrors of the structs and option constants in include/brats_ldm.h.
//!
//! Every struct is laid out without implicit padding (fields ordered by alignment), so that the
//! zero-tail rule of the options struct can be checked byte by byte; the C test compiles static
//! assertions of these sizes and offsets against the header.

use std::ffi::{c_char, c_void};

pub const DEVICE_CPU: i32 = 0;
pub const DEVICE_CUDA: i32 = 1;

pub const PRECISION_F32: i32 = 0;
pub const PRECISION_F16: i32 = 1;
pub const PRECISION_BF16: i32 = 2;

pub const SAMPLER_DEFAULT: i32 = 0;
pub const SAMPLER_DDIM: i32 = 1;
pub const SAMPLER_DDPM: i32 = 2;
pub const SAMPLER_PNDM: i32 = 3;

pub const STAGE_SAMPLING: i32 = 0;
pub const STAGE_DECODING: i32 = 1;

/// `brats_ldm_options`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BratsLdmOptions {
    pub struct_size: u32,
    pub device: i32,
    pub device_index: u32,
    pub precision: i32,
    pub sampler: i32,
    pub eta: f32,
    pub steps: u32,
    pub threads: u32,
    pub latent_shape: [u32; 4],
    pub max_memory: u64,
}

/// `brats_ldm_plan`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BratsLdmPlan {
    pub weight_bytes: u64,
    pub arena_bytes: u64,
    pub workspace_bytes: u64,
    pub state_bytes: u64,
    pub total_bytes: u64,
}

/// `brats_ldm_output_info`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BratsLdmOutputInfo {
    pub shape: [u32; 4],
    pub latent_shape: [u32; 4],
    pub num_floats: u64,
    pub steps: u32,
    pub spacing_mm: [f32; 3],
    pub intensity_range: [f32; 2],
    pub orientation: [c_char; 16],
}

/// `brats_ldm_progress`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BratsLdmProgress {
    pub stage: i32,
    pub step: u32,
    pub total_steps: u32,
    pub timestep: i32,
}

/// `brats_ldm_progress_fn`; `None` is C's NULL.
pub type ProgressFn = Option<unsafe extern "C" fn(progress: *const BratsLdmProgress, user_data: *mut c_void) -> i32>;

/// Opaque `brats_ldm_generator` as C sees it: only ever used behind a pointer.
#[repr(C)]
pub struct BratsLdmGenerator {
    _private: [u8; 0],
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    /// The layouts the header documents; a change here is an ABI break.
    #[test]
    fn no_implicit_padding() {
        assert_eq!(size_of::<BratsLdmOptions>(), 56);
        assert_eq!(offset_of!(BratsLdmOptions, max_memory), 48);
        assert_eq!(align_of::<BratsLdmOptions>(), 8);
        assert_eq!(size_of::<BratsLdmPlan>(), 40);
        assert_eq!(size_of::<BratsLdmOutputInfo>(), 80);
        assert_eq!(offset_of!(BratsLdmOutputInfo, orientation), 64);
        assert_eq!(size_of::<BratsLdmProgress>(), 16);
    }
}
