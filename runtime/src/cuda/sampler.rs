//! Per-step coefficient tables of the sampler kernels (cuda/sampler.cu), computed at load time
//! from the CPU's `Schedule` with the CPU's exact f32 expressions (`schedule::ddim_step`,
//! `schedule::ddpm_step`), uploaded once, and indexed on the device by the step counter. Host
//! tests replay the kernels' arithmetic on these tables and require bit-identical results to the
//! CPU updates.

use crate::schedule::Schedule;

use ldm_cuda::error::CudaError;

/// Floats per step in a table (the kernels' kSamplerCoefs).
pub const COEFS_PER_STEP: usize = 6;

fn timestep_index(s: &Schedule, t: u32) -> Result<usize, CudaError> {
    let t = t as usize;
    if t >= s.alphas_cumprod.len() {
        return Err(CudaError::Shape(format!(
            "timestep {t} outside the {}-step training schedule",
            s.alphas_cumprod.len()
        )));
    }
    Ok(t)
}

/// DDIM rows [sqrt(1-a_t), sqrt(a_t), sqrt(a_prev), dir, std_dev, noisy] for each timestep in
/// execution order; `prev_offset` = T / steps, `eta` the stochasticity (0 = deterministic).
pub fn ddim_table(
    s: &Schedule,
    timesteps: &[u32],
    prev_offset: usize,
    eta: f32,
) -> Result<Vec<f32>, CudaError> {
    let mut out = Vec::with_capacity(timesteps.len() * COEFS_PER_STEP);
    for &t in timesteps {
        let t = timestep_index(s, t)?;
        let a_t = s.alphas_cumprod[t];
        let a_prev = if t >= prev_offset {
            s.alphas_cumprod[t - prev_offset]
        } else {
            1.0f32
        };
        let b_t = 1.0 - a_t;
        let b_prev = 1.0 - a_prev;
        let variance = (b_prev / b_t) * (1.0 - a_t / a_prev);
        let std_dev = eta * variance.sqrt();
        let dir = (1.0 - a_prev - std_dev * std_dev).sqrt();
        let noisy = if eta > 0.0 { 1.0 } else { 0.0 };
        out.extend_from_slice(&[b_t.sqrt(), a_t.sqrt(), a_prev.sqrt(), dir, std_dev, noisy]);
    }
    Ok(out)
}

/// DDPM rows [sqrt(1-a_t), sqrt(a_t), x0_coeff, cur_coeff, sigma, noisy (t > 0)].
pub fn ddpm_table(s: &Schedule, timesteps: &[u32]) -> Result<Vec<f32>, CudaError> {
    let mut out = Vec::with_capacity(timesteps.len() * COEFS_PER_STEP);
    for &t in timesteps {
        let t = timestep_index(s, t)?;
        let a_t = s.alphas_cumprod[t];
        let a_prev = if t > 0 {
            s.alphas_cumprod[t - 1]
        } else {
            1.0f32
        };
        let b_t = 1.0 - a_t;
        let b_prev = 1.0 - a_prev;
        let x0_coeff = (a_prev.sqrt() * s.betas[t]) / b_t;
        let cur_coeff = s.alphas[t].sqrt() * b_prev / b_t;
        let variance = ((b_prev / b_t) * s.betas[t]).max(1e-20);
        let noisy = if t > 0 { 1.0 } else { 0.0 };
        out.extend_from_slice(&[
            b_t.sqrt(),
            a_t.sqrt(),
            x0_coeff,
            cur_coeff,
            variance.sqrt(),
            noisy,
        ]);
    }
    Ok(out)
}

/// Timesteps as the fp32 values the embedding kernel reads.
pub fn timestep_table(timesteps: &[u32]) -> Vec<f32> {
    timesteps.iter().map(|&t| t as f32).collect()
}

/// The DDIM kernel's arithmetic on the host (same operation order, no FMA), for tests and as the
/// statement of what the kernel computes.
pub fn ddim_update_host(row: &[f32], x: &mut [f32], eps: &[f32], noise: &[f32]) {
    let (sqrt_bt, sqrt_at, sqrt_aprev, dir, std_dev, noisy) =
        (row[0], row[1], row[2], row[3], row[4], row[5] != 0.0);
    for (i, (xv, &e)) in x.iter_mut().zip(eps).enumerate() {
        let x0 = (*xv - sqrt_bt * e) / sqrt_at;
        let mut v = sqrt_aprev * x0 + dir * e;
        if noisy {
            v += std_dev * noise[i];
        }
        *xv = v;
    }
}

/// The DDPM kernel's arithmetic on the host.
pub fn ddpm_update_host(row: &[f32], clip: bool, x: &mut [f32], eps: &[f32], noise: &[f32]) {
    let (sqrt_bt, sqrt_at, x0_coeff, cur_coeff, sigma, noisy) =
        (row[0], row[1], row[2], row[3], row[4], row[5] != 0.0);
    for (i, (xv, &e)) in x.iter_mut().zip(eps).enumerate() {
        let mut x0 = (*xv - sqrt_bt * e) / sqrt_at;
        if clip {
            x0 = x0.clamp(-1.0, 1.0);
        }
        let mut v = x0_coeff * x0 + cur_coeff * *xv;
        if noisy {
            v += sigma * noise[i];
        }
        *xv = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{ddim_step, ddim_timesteps, ddpm_step};
    use ldm_weights::SchedulerConfig;

    fn inputs(n: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut x = vec![0f32; n];
        let mut e = vec![0f32; n];
        let mut z = vec![0f32; n];
        crate::philox_normal(seed, 0, &mut x);
        crate::philox_normal(seed, n as u64, &mut e);
        crate::philox_normal(seed, 2 * n as u64, &mut z);
        for v in x.iter_mut() {
            *v *= 3.0; // some x0 outside [-1, 1] so clipping matters
        }
        (x, e, z)
    }

    #[test]
    fn ddim_table_replays_the_cpu_update_bit_for_bit() {
        let s = Schedule::new(&SchedulerConfig::bundle()).unwrap();
        let ts = ddim_timesteps(1000, 50).unwrap();
        for eta in [0.0f32, 0.5] {
            let table = ddim_table(&s, &ts, 1000 / 50, eta).unwrap();
            assert_eq!(table.len(), 50 * COEFS_PER_STEP);
            let (x, e, z) = inputs(1000, 11);
            let (mut gpu, mut cpu) = (x.clone(), x);
            for (k, &t) in ts.iter().enumerate() {
                ddim_update_host(
                    &table[k * COEFS_PER_STEP..(k + 1) * COEFS_PER_STEP],
                    &mut gpu,
                    &e,
                    &z,
                );
                ddim_step(&s, t, 1000 / 50, eta, &mut cpu, &e, Some(&z));
            }
            assert!(
                gpu.iter()
                    .zip(&cpu)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "eta {eta}"
            );
        }
        // Last step goes to a_prev = 1: sqrt(a_prev) = 1, dir = 0.
        let table = ddim_table(&s, &ts, 20, 0.0).unwrap();
        let last = &table[49 * COEFS_PER_STEP..];
        assert_eq!((last[2], last[3], last[5]), (1.0, 0.0, 0.0));
    }

    #[test]
    fn ddpm_table_replays_the_cpu_update_bit_for_bit() {
        let s = Schedule::new(&SchedulerConfig::bundle()).unwrap();
        let ts: Vec<u32> = (0..1000u32).rev().collect();
        let table = ddpm_table(&s, &ts).unwrap();
        let (x, e, z) = inputs(500, 5);
        for clip in [true, false] {
            let (mut gpu, mut cpu) = (x.clone(), x.clone());
            for (k, &t) in ts
                .iter()
                .enumerate()
                .step_by(37)
                .chain(std::iter::once((999, &0u32)))
            {
                ddpm_update_host(
                    &table[k * COEFS_PER_STEP..(k + 1) * COEFS_PER_STEP],
                    clip,
                    &mut gpu,
                    &e,
                    &z,
                );
                ddpm_step(&s, t, clip, &mut cpu, &e, &z);
            }
            assert!(
                gpu.iter()
                    .zip(&cpu)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "clip {clip}"
            );
        }
        assert_eq!(table[999 * COEFS_PER_STEP + 5], 0.0, "no noise at t = 0");
        assert_eq!(table[5], 1.0);
    }

    #[test]
    fn out_of_range_timesteps_are_errors() {
        let s = Schedule::new(&SchedulerConfig::bundle()).unwrap();
        assert!(ddim_table(&s, &[1000], 20, 0.0).is_err());
        assert!(ddpm_table(&s, &[5000]).is_err());
        assert_eq!(timestep_table(&[980, 0]), vec![980.0, 0.0]);
    }
}
