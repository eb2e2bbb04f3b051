//! Deterministic parameter initialisation and per-step random streams.
//!
//! Initialisation follows PyTorch/MONAI defaults by tensor role: conv and linear weights and
//! biases `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` (PyTorch's default), GroupNorm weight 1 and bias
//! 0; the UNet's zero-initialised layers (`conv2` of every ResnetBlock and the output conv, as
//! generative 0.2.3's `zero_module`) start at 0; the discriminator's convs use MONAI's
//! `PatchDiscriminator.initialize_weights`: weight `N(0, 0.02)`, bias 0.
//!
//! Random numbers come from the counter-based Philox stream of the runtime: the stream for
//! (seed, step, purpose) is a pure function of those three, so a resumed run draws exactly the
//! numbers an uninterrupted one would.

use ldm_runtime::philox_normal;

use crate::params::ParamStore;

/// What a random stream is used for (keeps streams of one step independent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    Init = 1,
    VaeSampling = 2,
    DiffusionNoise = 3,
    Timesteps = 4,
    Encode = 5,
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The Philox key of one (seed, step, stream).
pub fn stream_seed(seed: u64, step: u64, stream: Stream) -> u64 {
    mix(mix(seed ^ 0x6C64_6D5F_7472_6169).wrapping_add(mix(step.wrapping_add(1) ^ ((stream as u64) << 56))))
}

/// `n` standard normal numbers of one stream.
pub fn normals(seed: u64, step: u64, stream: Stream, n: usize) -> Vec<f32> {
    normals_at(seed, step, stream, 0, n)
}

/// Numbers `first..first + n` of the stream of [`normals`] (one rank's part of a global batch).
pub fn normals_at(seed: u64, step: u64, stream: Stream, first: u64, n: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; n];
    philox_normal(stream_seed(seed, step, stream), first, &mut v);
    v
}

/// `n` uniform integers in `[0, bound)` of one stream (bound > 0).
pub fn uniform_ints(seed: u64, step: u64, stream: Stream, n: usize, bound: u64) -> Vec<u64> {
    uniform_ints_at(seed, step, stream, 0, n, bound)
}

/// Integers `first..first + n` of the stream of [`uniform_ints`].
pub fn uniform_ints_at(seed: u64, step: u64, stream: Stream, first: u64, n: usize, bound: u64) -> Vec<u64> {
    let key = stream_seed(seed, step, stream);
    (first..first + n as u64).map(|i| mix(key ^ mix(i.wrapping_add(0x9E37_79B9_7F4A_7C15))) % bound.max(1)).collect()
}

fn fan_in(shape: &[usize]) -> usize {
    shape.iter().skip(1).product::<usize>().max(1)
}

/// Initialises every tensor of `store` by its name and shape (see the module doc).
pub fn init_params(store: &mut ParamStore, seed: u64) {
    let names: Vec<(String, Vec<usize>, usize, usize)> =
        store.entries.iter().map(|e| (e.name.clone(), e.shape.clone(), e.param.offset, e.param.len)).collect();
    // Weight shapes by layer prefix, to size biases by their weight's fan-in.
    let weight_fan = |prefix: &str| -> usize {
        store.entries.iter().find(|e| e.name == format!("{prefix}.weight")).map_or(1, |e| fan_in(&e.shape))
    };
    let fans: Vec<usize> = names
        .iter()
        .map(|(name, shape, _, _)| match name.strip_suffix(".bias") {
            Some(prefix) => weight_fan(prefix),
            None => fan_in(shape),
        })
        .collect();
    for (k, (name, shape, offset, len)) in names.iter().enumerate() {
        let is_bias = name.ends_with(".bias");
        let is_matrix_weight = shape.len() >= 2;
        // Norm parameters: 1-D weights whose layer has no matrix weight.
        let is_norm = !is_matrix_weight && {
            let prefix = name.rsplit_once('.').map_or(name.as_str(), |(p, _)| p);
            store.entries.iter().find(|e| e.name == format!("{prefix}.weight")).is_some_and(|e| e.shape.len() == 1)
        };
        let dst = &mut store.data[*offset..offset + len];
        let mut noise = vec![0.0f32; *len];
        philox_normal(stream_seed(seed, k as u64, Stream::Init), 0, &mut noise);
        let zero_module = name.starts_with("unet.") && (name.contains(".conv2.conv.") || name.starts_with("unet.out.2.conv."));
        if is_norm {
            dst.fill(if is_bias { 0.0 } else { 1.0 });
        } else if zero_module {
            dst.fill(0.0);
        } else if name.starts_with("discriminator.") {
            if is_bias {
                dst.fill(0.0);
            } else {
                dst.iter_mut().zip(&noise).for_each(|(d, n)| *d = 0.02 * n);
            }
        } else {
            // U(-bound, bound): the angle atan2(b, a) of two independent normals is uniform on
            // (-pi, pi].
            let bound = 1.0 / (fans[k] as f32).sqrt();
            let mut u = vec![0.0f32; *len];
            philox_normal(stream_seed(seed, k as u64 + (1 << 40), Stream::Init), 0, &mut u);
            dst.iter_mut().zip(noise.iter().zip(&u)).for_each(|(d, (&a, &b))| {
                *d = bound * (b.atan2(a) / std::f32::consts::PI);
            });
        }
    }
}
