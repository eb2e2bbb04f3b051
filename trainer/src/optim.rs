//! Adam (PyTorch semantics, no weight decay, no amsgrad) over a flat parameter buffer, and the
//! MultiStepLR schedule. The optimiser state is plain vectors so checkpoints store it as is.

use serde::{Deserialize, Serialize};

/// Adam hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

/// Adam state for one flat parameter buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Adam {
    pub config: AdamConfig,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    /// Number of updates taken so far (PyTorch's `state["step"]`).
    pub t: u64,
}

impl Adam {
    pub fn new(config: AdamConfig, len: usize) -> Self {
        Adam { config, m: vec![0.0; len], v: vec![0.0; len], t: 0 }
    }

    /// One update with learning rate `lr` (from the schedule):
    /// `m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    ///  p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)`.
    /// Buffers of different lengths are a programming error of the caller's trainer and are
    /// rejected by returning `false` without touching anything.
    #[must_use]
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) -> bool {
        if params.len() != self.m.len() || grads.len() != self.m.len() {
            return false;
        }
        self.t += 1;
        let AdamConfig { beta1: b1, beta2: b2, eps, .. } = self.config;
        let bc1 = 1.0 - (b1 as f64).powi(self.t.min(i32::MAX as u64) as i32);
        let bc2 = 1.0 - (b2 as f64).powi(self.t.min(i32::MAX as u64) as i32);
        let step_size = (lr as f64 / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        for i in 0..params.len() {
            let g = grads[i];
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g;
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g * g;
            let denom = self.v[i].sqrt() / bc2_sqrt + eps;
            params[i] -= step_size * self.m[i] / denom;
        }
        true
    }
}

/// `lr = base * gamma^(number of milestones <= step)` (PyTorch MultiStepLR, counted in the unit
/// the caller steps it in: epochs in the bundle, optimiser steps here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiStepLr {
    pub base: f32,
    pub milestones: Vec<u64>,
    pub gamma: f32,
}

impl MultiStepLr {
    pub fn constant(base: f32) -> Self {
        MultiStepLr { base, milestones: Vec::new(), gamma: 1.0 }
    }

    pub fn lr_at(&self, step: u64) -> f32 {
        let k = self.milestones.iter().filter(|&&m| m <= step).count() as i32;
        self.base * self.gamma.powi(k)
    }
}
