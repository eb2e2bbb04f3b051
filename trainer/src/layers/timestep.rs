//! Sinusoidal timestep embedding of `DiffusionModelUNet` (generative 0.2.3,
//! `flip_sin_to_cos=True`): `freq_i = exp(-ln(10000) * i / half)`, `emb = [cos(t f), sin(t f)]`,
//! zero-padded by one column when the dimension is odd. The timestep is not differentiated.

/// Embeds each timestep into `dim` values; returns `[timesteps.len(), dim]` row-major.
pub fn timestep_embedding(timesteps: &[f32], dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let ln = -(10000.0f32).ln();
    let freqs: Vec<f32> = (0..half).map(|i| (ln * i as f32 / half as f32).exp()).collect();
    let mut out = vec![0.0f32; timesteps.len() * dim];
    for (row, &t) in out.chunks_mut(dim).zip(timesteps) {
        for (i, &f) in freqs.iter().enumerate() {
            let a = t * f;
            row[i] = a.cos();
            row[half + i] = a.sin();
        }
    }
    out
}
