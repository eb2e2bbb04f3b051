//! `PatchDiscriminator` (generative 0.2.3, instance norm): `initial_conv` (k4 s2 p1, bias) ->
//! LeakyReLU(0.2); `num_layers_d` layers `{l}` (k4, stride 2 except the last with stride 1, p1,
//! no bias) -> InstanceNorm3d (eps 1e-5, no affine) -> LeakyReLU(0.2); `final_conv` (k4 s1 p1,
//! bias, no activation). Channels double per layer. The logits are the last output.

use serde::{Deserialize, Serialize};

use super::program::{self, Op, Tape};
use super::ModelError;
use crate::layers::conv3d::Conv3d;
use crate::layers::norm::GroupNorm;
use crate::layers::{check_len, Dims};
use crate::params::ParamStore;

const PREFIX: &str = "discriminator";
const SLOPE: f32 = 0.2;

/// Constructor arguments of `PatchDiscriminator` (the bundle: 3 layers, 32 channels, 1 in/out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscriminatorConfig {
    pub in_channels: u32,
    pub num_channels: u32,
    pub num_layers_d: u32,
    pub out_channels: u32,
}

impl DiscriminatorConfig {
    /// The bundle's discriminator.
    pub fn bundle() -> Self {
        DiscriminatorConfig { in_channels: 1, num_channels: 32, num_layers_d: 3, out_channels: 1 }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PatchDiscriminator {
    pub config: DiscriminatorConfig,
    pub ops: Vec<Op>,
    /// End of this model's tensors in its parameter store.
    pub param_end: usize,
}

/// Logits plus the tape for the backward.
#[derive(Debug, Clone)]
pub struct DiscForward {
    pub logits: Vec<f32>,
    pub logit_dims: Dims,
    tape: Tape,
}

impl PatchDiscriminator {
    pub fn new(store: &mut ParamStore, cfg: &DiscriminatorConfig) -> Result<Self, ModelError> {
        if cfg.num_channels == 0 || cfg.in_channels == 0 || cfg.out_channels == 0 || cfg.num_layers_d > 12 {
            return Err(ModelError::Config(format!("unsupported discriminator configuration {cfg:?}")));
        }
        let mut ops = Vec::new();
        let c0 = cfg.num_channels as usize;
        ops.push(Op::Conv(Conv3d::new(store, &format!("{PREFIX}.initial_conv.conv"), cfg.in_channels as usize, c0, 4, 2, 1, true)?));
        ops.push(Op::LeakyRelu(SLOPE));
        let mut cin = c0;
        for l in 0..cfg.num_layers_d as usize {
            let stride = if l + 1 == cfg.num_layers_d as usize { 1 } else { 2 };
            let cout = cin * 2;
            ops.push(Op::Conv(Conv3d::new(store, &format!("{PREFIX}.{l}.conv"), cin, cout, 4, stride, 1, false)?));
            ops.push(Op::Norm(GroupNorm::instance(cout, 1e-5)));
            ops.push(Op::LeakyRelu(SLOPE));
            cin = cout;
        }
        ops.push(Op::Conv(Conv3d::new(store, &format!("{PREFIX}.final_conv.conv"), cin, cfg.out_channels as usize, 4, 1, 1, true)?));
        Ok(PatchDiscriminator { config: cfg.clone(), ops, param_end: store.len() })
    }

    /// Logits of `x`; `keep` saves the tape for [`PatchDiscriminator::backward`].
    pub fn forward(&self, p: &[f32], x: &[f32], xd: Dims, keep: bool) -> Result<DiscForward, ModelError> {
        if xd.c != self.config.in_channels as usize || xd.n == 0 {
            return Err(ModelError::Input(format!("discriminator input shape {:?} needs {} channels", xd.as_array(), self.config.in_channels)));
        }
        super::check_params("discriminator", self.param_end, p, None)?;
        check_len("discriminator", "input", x.len(), xd.numel())?;
        let (logits, logit_dims, tape) = program::forward(&self.ops, p, x, xd, None, keep)?;
        Ok(DiscForward { logits, logit_dims, tape })
    }

    /// Accumulates parameter gradients from d(logits); returns d(input) (the generator side
    /// needs it to reach the autoencoder).
    pub fn backward(&self, p: &[f32], g: &mut [f32], fw: &DiscForward, dlogits: &[f32]) -> Result<Vec<f32>, ModelError> {
        super::check_params("discriminator", self.param_end, p, Some(g))?;
        check_len("discriminator", "logit gradient", dlogits.len(), fw.logits.len())?;
        Ok(program::backward(&self.ops, p, g, &fw.tape, dlogits, None, None)?)
    }
}
