//! Counter-based Gaussian noise: Philox4x32-10 + Box-Muller.
//!
//! Element `i` of the stream for `seed` is a pure function of `(seed, i)`:
//! block `b = i / 4` is encrypted as counter `[b_lo, b_hi, 0, 0]` under key `[seed_lo, seed_hi]`
//! with Philox4x32-10; the four words `x0..x3` become uniforms `u = ((x >> 8) + 0.5) * 2^-24`
//! in (0, 1); Box-Muller (computed in f64, rounded to f32) turns `(u0, u1)` into
//! `r cos(2 pi u1), r sin(2 pi u1)` with `r = sqrt(-2 ln u0)`, elements `4b, 4b+1`, and `(u2, u3)`
//! likewise into `4b+2, 4b+3`. Any split of the index range gives the same numbers.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Philox4x32 with 10 rounds.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let p0 = (M0 as u64) * (c[0] as u64);
        let p1 = (M1 as u64) * (c[2] as u64);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

fn uniform(x: u32) -> f64 {
    ((x >> 8) as f64 + 0.5) * (1.0 / 16_777_216.0)
}

fn block_normals(seed: u64, block: u64) -> [f32; 4] {
    let x = philox4x32_10(
        [block as u32, (block >> 32) as u32, 0, 0],
        [seed as u32, (seed >> 32) as u32],
    );
    let mut out = [0f32; 4];
    for pair in 0..2 {
        let u0 = uniform(x[2 * pair]);
        let u1 = uniform(x[2 * pair + 1]);
        let r = (-2.0 * u0.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        out[2 * pair] = (r * theta.cos()) as f32;
        out[2 * pair + 1] = (r * theta.sin()) as f32;
    }
    out
}

/// Fills `out[i]` with standard normal number `offset + i` of the stream for `seed`.
pub fn philox_normal(seed: u64, offset: u64, out: &mut [f32]) {
    let mut i = 0usize;
    while i < out.len() {
        let idx = offset.wrapping_add(i as u64);
        let block = idx / 4;
        let lane = (idx % 4) as usize;
        let v = block_normals(seed, block);
        let take = (4 - lane).min(out.len() - i);
        out[i..i + take].copy_from_slice(&v[lane..lane + take]);
        i += take;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_known_answer() {
        // Random123 known-answer vectors for philox4x32_10.
        assert_eq!(philox4x32_10([0, 0, 0, 0], [0, 0]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(
            philox4x32_10([0xffffffff; 4], [0xffffffff; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn any_split_gives_the_same_numbers() {
        let mut whole = vec![0f32; 103];
        philox_normal(42, 5, &mut whole);
        let mut parts = vec![0f32; 103];
        let (a, b) = parts.split_at_mut(37);
        philox_normal(42, 5, a);
        philox_normal(42, 5 + 37, b);
        assert_eq!(whole, parts);
        let mut other = vec![0f32; 103];
        philox_normal(43, 5, &mut other);
        assert_ne!(whole, other);
    }

    #[test]
    fn moments_are_standard_normal() {
        let mut v = vec![0f32; 200_000];
        philox_normal(7, 0, &mut v);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
    }
}
