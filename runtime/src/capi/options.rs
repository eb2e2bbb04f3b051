//! `brats_ldm_options`: defaults, the struct_size forward-compatibility rule, and conversion to
//! the runtime's [`Options`](crate::Options).

use super::status::CError;
use super::types::*;
use crate::arguments::{self, Spelling};
use crate::{Device, Options, Precision};
use ldm_weights::SamplerKind;
use std::mem::size_of;

/// Size of the options struct this library knows.
pub const OPTIONS_SIZE: usize = size_of::<BratsLdmOptions>();
/// Smallest struct_size accepted: the first published layout (this one).
pub const MIN_OPTIONS_SIZE: usize = 56;
/// A larger struct_size than this is not a real struct but an uninitialised field.
const MAX_OPTIONS_SIZE: usize = 4096;

/// The defaults `brats_ldm_options_init` writes.
pub fn defaults() -> BratsLdmOptions {
    BratsLdmOptions {
        struct_size: OPTIONS_SIZE as u32,
        device: DEVICE_CPU,
        device_index: 0,
        precision: PRECISION_F32,
        sampler: SAMPLER_DEFAULT,
        eta: 0.0,
        steps: 0,
        threads: 0,
        latent_shape: [0; 4],
        max_memory: 0,
    }
}

/// Fill the caller's `struct_size` bytes at `dst` with defaults: our fields up to that size, zero
/// beyond (fields this library does not know, whose zero means "default"), and struct_size set
/// to the caller's size.
///
/// # Safety
/// `dst` must be valid for writes of `struct_size` bytes.
pub unsafe fn init(dst: *mut u8, struct_size: usize) -> Result<(), CError> {
    check_size(struct_size)?;
    let mut value = defaults();
    value.struct_size = struct_size as u32; // check_size bounds it by MAX_OPTIONS_SIZE
    let ours = struct_size.min(OPTIONS_SIZE);
    // SAFETY: `value` is a plain-old-data struct without padding; `dst` holds struct_size >= ours
    // bytes by the caller's contract, and the two regions cannot overlap (one is our local).
    unsafe {
        std::ptr::copy_nonoverlapping((&value as *const BratsLdmOptions).cast::<u8>(), dst, ours);
        std::ptr::write_bytes(dst.add(ours), 0, struct_size - ours);
    }
    Ok(())
}

fn check_size(struct_size: usize) -> Result<(), CError> {
    if struct_size < MIN_OPTIONS_SIZE {
        return Err(CError::invalid(format!(
            "options struct_size is {struct_size}, smaller than the smallest brats_ldm_options \
             ({MIN_OPTIONS_SIZE} bytes): initialise the options with BRATS_LDM_OPTIONS_INIT"
        )));
    }
    if struct_size > MAX_OPTIONS_SIZE {
        return Err(CError::invalid(format!(
            "options struct_size is {struct_size}, implausibly large (at most {MAX_OPTIONS_SIZE}): \
             were the options initialised with BRATS_LDM_OPTIONS_INIT?"
        )));
    }
    Ok(())
}

/// Read the caller's options; NULL means defaults.
///
/// # Safety
/// `src` is NULL or points to an options struct whose `struct_size` bytes are readable.
pub unsafe fn read(src: *const BratsLdmOptions) -> Result<BratsLdmOptions, CError> {
    if src.is_null() {
        return Ok(defaults());
    }
    let bytes = src.cast::<u8>();
    // SAFETY: every options struct starts with its u32 struct_size.
    let struct_size = unsafe { bytes.cast::<u32>().read_unaligned() } as usize;
    check_size(struct_size)?;
    if struct_size > OPTIONS_SIZE {
        // SAFETY: the caller vouches for struct_size readable bytes.
        let tail = unsafe { std::slice::from_raw_parts(bytes.add(OPTIONS_SIZE), struct_size - OPTIONS_SIZE) };
        if let Some(pos) = tail.iter().position(|&b| b != 0) {
            return Err(CError::invalid(format!(
                "options struct_size is {struct_size} but this library (version {}) knows only \
                 {OPTIONS_SIZE} bytes, and byte {} beyond them is set: the header is newer than \
                 the library and asks for something it cannot do",
                env!("CARGO_PKG_VERSION"),
                OPTIONS_SIZE + pos
            )));
        }
    }
    let mut value = defaults();
    let ours = struct_size.min(OPTIONS_SIZE);
    // SAFETY: as above; `value` is plain-old-data without padding, any bytes are a valid value.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes, (&mut value as *mut BratsLdmOptions).cast::<u8>(), ours);
    }
    Ok(value)
}

/// Convert checked C options to the runtime's options, naming the first bad field.
pub fn to_runtime(o: &BratsLdmOptions) -> Result<Options, CError> {
    let device = match o.device {
        DEVICE_CPU if o.device_index == 0 => Device::Cpu,
        DEVICE_CPU => {
            return Err(CError::invalid(format!(
                "options.device_index is {} but device is BRATS_LDM_DEVICE_CPU (index must be 0)",
                o.device_index
            )))
        }
        DEVICE_CUDA => Device::Cuda(o.device_index as usize),
        other => {
            return Err(CError::invalid(format!(
                "options.device {other} is not a BRATS_LDM_DEVICE_* value"
            )))
        }
    };
    let precision = match o.precision {
        PRECISION_F32 => Precision::F32,
        PRECISION_F16 => Precision::F16,
        PRECISION_BF16 => Precision::Bf16,
        other => {
            return Err(CError::invalid(format!(
                "options.precision {other} is not a BRATS_LDM_PRECISION_* value"
            )))
        }
    };
    // eta 0 means "not given"; the sampler rules are the other front ends' (`arguments`).
    let eta = (o.eta != 0.0).then_some(o.eta);
    let kind = match o.sampler {
        SAMPLER_DEFAULT => None,
        SAMPLER_DDIM => Some(SamplerKind::Ddim),
        SAMPLER_DDPM => Some(SamplerKind::Ddpm),
        SAMPLER_PNDM => Some(SamplerKind::Pndm),
        other => {
            return Err(CError::invalid(format!(
                "options.sampler {other} is not a BRATS_LDM_SAMPLER_* value"
            )))
        }
    };
    let sampler = match (kind, eta) {
        (Some(kind), eta) => Some(arguments::sampler_of(kind, eta, Spelling::C)?),
        (None, None) => None,
        (None, Some(_)) => return Err(arguments::eta_without_ddim(Spelling::C).into()),
    };
    let latent_shape = match o.latent_shape {
        [0, 0, 0, 0] => None,
        s if s.iter().all(|&d| d > 0) => Some(s.map(|d| d as usize)),
        s => {
            return Err(CError::invalid(format!(
                "options.latent_shape is {s:?}: give all four of [C, D, H, W] or none (all 0)"
            )))
        }
    };
    let max_memory = match o.max_memory {
        0 => None,
        m => Some(usize::try_from(m).map_err(|_| {
            CError::invalid(format!(
                "options.max_memory {m} does not fit this platform's address space"
            ))
        })?),
    };
    // Fields the runtime may add later keep their defaults.
    #[allow(clippy::needless_update)]
    let options = Options {
        device,
        precision,
        batch: 1,
        latent_shape,
        steps: (o.steps != 0).then_some(o.steps as usize),
        sampler,
        threads: (o.threads != 0).then_some(o.threads as usize),
        max_memory,
        ..Options::default()
    };
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sampler;

    #[test]
    fn init_smaller_equal_and_larger_structs() {
        let mut buf = [0xAAu8; 80];
        unsafe { init(buf.as_mut_ptr(), OPTIONS_SIZE) }.unwrap();
        let read_back = unsafe { read(buf.as_ptr().cast()) }.unwrap();
        assert_eq!(read_back, defaults());
        assert!(buf[OPTIONS_SIZE..].iter().all(|&b| b == 0xAA), "wrote past struct_size");

        // A newer caller with a larger struct: the tail is zeroed and accepted.
        let mut big = [0xAAu8; 80];
        unsafe { init(big.as_mut_ptr(), 72) }.unwrap();
        assert!(big[OPTIONS_SIZE..72].iter().all(|&b| b == 0));
        assert!(big[72..].iter().all(|&b| b == 0xAA));
        let o = unsafe { read(big.as_ptr().cast()) }.unwrap();
        assert_eq!(o.struct_size, 72);
        // ...but a set unknown byte is refused.
        big[60] = 1;
        let err = unsafe { read(big.as_ptr().cast()) }.unwrap_err();
        assert!(err.message.contains("byte 60"), "{}", err.message);

        let err = unsafe { init(buf.as_mut_ptr(), 8) }.unwrap_err();
        assert!(err.message.contains("BRATS_LDM_OPTIONS_INIT"));
    }

    #[test]
    fn uninitialised_struct_size_is_refused() {
        let mut o = defaults();
        o.struct_size = 0;
        assert!(unsafe { read(&o) }.is_err());
        o.struct_size = 0xdead_beef;
        assert!(unsafe { read(&o) }.unwrap_err().message.contains("implausibly large"));
        assert_eq!(unsafe { read(std::ptr::null()) }.unwrap(), defaults());
    }

    #[test]
    fn conversion_rules() {
        let d = to_runtime(&defaults()).unwrap();
        assert!(matches!(d.device, Device::Cpu));
        assert!(d.sampler.is_none() && d.steps.is_none() && d.latent_shape.is_none());

        let mut o = defaults();
        o.sampler = SAMPLER_DDIM;
        o.eta = 0.5;
        o.steps = 7;
        o.latent_shape = [8, 8, 8, 4];
        o.threads = 2;
        let r = to_runtime(&o).unwrap();
        assert!(matches!(r.sampler, Some(Sampler::Ddim { eta }) if eta == 0.5));
        assert_eq!(r.steps, Some(7));
        assert_eq!(r.latent_shape, Some([8, 8, 8, 4]));
        assert_eq!(r.threads, Some(2));

        for bad in [
            BratsLdmOptions { eta: 0.5, ..defaults() },
            BratsLdmOptions {
                sampler: SAMPLER_DDPM,
                eta: 1.0,
                ..defaults()
            },
            BratsLdmOptions {
                sampler: SAMPLER_DDIM,
                eta: f32::NAN,
                ..defaults()
            },
            BratsLdmOptions {
                sampler: SAMPLER_DDIM,
                eta: -1.0,
                ..defaults()
            },
            BratsLdmOptions {
                sampler: 9,
                ..defaults()
            },
            BratsLdmOptions {
                device: 5,
                ..defaults()
            },
            BratsLdmOptions {
                device_index: 1,
                ..defaults()
            },
            BratsLdmOptions {
                precision: -1,
                ..defaults()
            },
            BratsLdmOptions {
                latent_shape: [8, 0, 8, 4],
                ..defaults()
            },
        ] {
            let err = to_runtime(&bad).unwrap_err();
            assert_eq!(err.code, super::super::status::ERR_INVALID_ARGUMENT, "{bad:?}");
            assert!(err.message.contains("options."), "{}", err.message);
        }
    }
}
