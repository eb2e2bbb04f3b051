//! Element-wise activations: SiLU (`x * sigmoid(x)`) and leaky ReLU (the discriminator's, slope
//! 0.2). Backward takes the saved forward input.

use rayon::prelude::*;

use super::{check_len, LayerError};

const PAR_MIN: usize = 1 << 15;

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

pub fn silu_forward(x: &[f32]) -> Vec<f32> {
    let f = |&v: &f32| v * sigmoid(v);
    if x.len() >= PAR_MIN {
        x.par_iter().map(f).collect()
    } else {
        x.iter().map(f).collect()
    }
}

pub fn silu_backward(x: &[f32], dy: &[f32]) -> Result<Vec<f32>, LayerError> {
    check_len("silu", "output gradient", dy.len(), x.len())?;
    let f = |(&v, &d): (&f32, &f32)| {
        let s = sigmoid(v);
        d * (s + v * s * (1.0 - s))
    };
    Ok(if x.len() >= PAR_MIN { x.par_iter().zip(dy.par_iter()).map(f).collect() } else { x.iter().zip(dy).map(f).collect() })
}

pub fn leaky_relu_forward(x: &[f32], slope: f32) -> Vec<f32> {
    x.par_iter().map(|&v| if v > 0.0 { v } else { v * slope }).collect()
}

/// PyTorch's convention: the gradient at exactly 0 uses the negative slope.
pub fn leaky_relu_backward(x: &[f32], dy: &[f32], slope: f32) -> Result<Vec<f32>, LayerError> {
    check_len("leaky_relu", "output gradient", dy.len(), x.len())?;
    Ok(x.par_iter().zip(dy.par_iter()).map(|(&v, &d)| if v > 0.0 { d } else { d * slope }).collect())
}
