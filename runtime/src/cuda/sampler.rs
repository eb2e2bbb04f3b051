//! Host side of the sampler kernels (cuda/sampler.cu): the coefficient rows are the CPU's
//! (`crate::sampler::plan`, uploaded once and indexed on the device by the step counter), the
//! kernels repeat `crate::sampler`'s updates operation by operation, and the time embedding reads
//! the plan's timesteps as fp32.

/// Floats per step row (the kernels' kSamplerCoefs).
pub const COEFS_PER_STEP: usize = crate::sampler::ROW;

/// Timesteps as the fp32 values the embedding kernel reads.
pub fn timestep_table(timesteps: &[u32]) -> Vec<f32> {
    timesteps.iter().map(|&t| t as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timesteps_are_exact_floats() {
        assert_eq!(timestep_table(&[980, 0]), vec![980.0, 0.0]);
        assert_eq!(COEFS_PER_STEP, 20);
    }
}
