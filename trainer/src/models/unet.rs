//! `DiffusionModelUNet` (generative 0.2.3, no conditioning): timestep embedding of dim C0 ->
//! Linear(C0, 4C0) -> SiLU -> Linear(4C0, 4C0) = emb; conv_in; down levels of ResnetBlocks
//! (+ attention) with a stride-2 conv downsampler except the deepest; middle Res -> Attn -> Res;
//! up levels of `num_res_blocks + 1` ResnetBlocks, each on `cat([h, popped skip])` (+ attention),
//! with nearest-x2 + conv upsampler except the shallowest; GroupNorm -> SiLU -> conv out.
//! Predicts epsilon. The layers come from the one declaration, `ldm_weights::network::unet`;
//! parameters are `unet.<generative key>`; `proj_attn` is registered only when
//! `attention_output_projection` is set (generative 0.2.3 never applies it).

use ldm_weights::network;
use ldm_weights::UnetConfig;

use super::program::{self, Op, Tape};
use super::ModelError;
use crate::layers::act::{silu_backward, silu_forward};
use crate::layers::linear::Linear;
use crate::layers::timestep::timestep_embedding;
use crate::layers::{check_len, Dims};
use crate::params::ParamStore;

#[derive(Debug, Clone, PartialEq)]
pub struct DiffusionUnet {
    pub config: UnetConfig,
    pub time_embed_0: Linear,
    pub time_embed_2: Linear,
    pub ops: Vec<Op>,
    /// End of this model's tensors in its parameter store.
    pub param_end: usize,
}

/// Output plus everything the backward needs.
#[derive(Debug, Clone)]
pub struct UnetForward {
    pub eps: Vec<f32>,
    pub dims: Dims,
    tape: Tape,
    t_emb: Vec<f32>,
    e1: Vec<f32>,
    e1s: Vec<f32>,
    emb: Vec<f32>,
    semb: Vec<f32>,
}

impl DiffusionUnet {
    #[allow(clippy::needless_range_loop)]
    pub fn new(store: &mut ParamStore, cfg: &UnetConfig) -> Result<Self, ModelError> {
        let nl = cfg.num_channels.len();
        if nl == 0 || cfg.attention_levels.len() != nl || cfg.num_head_channels.len() != nl || cfg.num_res_blocks.len() != nl {
            return Err(ModelError::Config(format!(
                "unet: num_channels, attention_levels, num_head_channels and num_res_blocks need equal lengths, got {}, {}, {}, {}",
                nl,
                cfg.attention_levels.len(),
                cfg.num_head_channels.len(),
                cfg.num_res_blocks.len()
            )));
        }
        let groups = cfg.norm_num_groups as usize;
        let ch: Vec<usize> = cfg.num_channels.iter().map(|&c| c as usize).collect();
        if groups == 0 || ch.iter().any(|&c| c == 0 || c % groups != 0) {
            return Err(ModelError::Config(format!("unet: channels {ch:?} must be positive multiples of {groups} groups")));
        }
        for (i, (&att, &hc)) in cfg.attention_levels.iter().zip(&cfg.num_head_channels).enumerate() {
            if (att || i + 1 == nl) && (hc == 0 || ch[i] % hc as usize != 0) {
                return Err(ModelError::Config(format!("unet: level {i} has attention but head channels {hc} do not divide {}", ch[i])));
            }
        }
        let net = network::unet(cfg);
        let [e0, e2] = &net.time_embed;
        let time_embed_0 = Linear::new(store, &e0.path, e0.cin, e0.cout, true)?;
        let time_embed_2 = Linear::new(store, &e2.path, e2.cin, e2.cout, true)?;
        let mut ops = program::from_layers(store, &net.layers, net.norm)?;
        if let Some(Op::Conv(conv_in)) = ops.first_mut() {
            conv_in.input_grad = false; // d(x_t) is never needed
        }
        Ok(DiffusionUnet { config: cfg.clone(), time_embed_0, time_embed_2, ops, param_end: store.len() })
    }

    /// Latent spatial extents must be divisible by 2^(levels-1).
    pub fn check_input(&self, xd: Dims, timesteps: usize) -> Result<(), ModelError> {
        let f = 1usize << (self.config.num_channels.len() - 1);
        if xd.n == 0 || xd.c != self.config.in_channels as usize || [xd.d, xd.h, xd.w].iter().any(|&e| e == 0 || e % f != 0) {
            return Err(ModelError::Input(format!(
                "unet input shape {:?} must be [N>0, {}, D, H, W] with D, H, W positive multiples of {f}",
                xd.as_array(),
                self.config.in_channels
            )));
        }
        if timesteps != xd.n {
            return Err(ModelError::Input(format!("{timesteps} timesteps given for a batch of {}", xd.n)));
        }
        Ok(())
    }

    /// Predicts epsilon for `x` at the per-sample `timesteps`; `keep` saves the tape.
    pub fn forward(&self, p: &[f32], x: &[f32], xd: Dims, timesteps: &[f32], keep: bool) -> Result<UnetForward, ModelError> {
        self.check_input(xd, timesteps.len())?;
        super::check_params("unet", self.param_end, p, None)?;
        check_len("unet", "input", x.len(), xd.numel())?;
        let c0 = self.config.num_channels[0] as usize;
        let t_emb = timestep_embedding(timesteps, c0);
        let e1 = self.time_embed_0.forward(p, &t_emb, xd.n)?;
        let e1s = silu_forward(&e1);
        let emb = self.time_embed_2.forward(p, &e1s, xd.n)?;
        let semb = silu_forward(&emb);
        let (eps, dims, tape) = program::forward(&self.ops, p, x, xd, Some(&semb), keep)?;
        Ok(UnetForward { eps, dims, tape, t_emb, e1, e1s, emb, semb })
    }

    /// Accumulates parameter gradients from d(eps). d(x_t) is not computed (conv_in has
    /// `input_grad == false`): the returned vector is empty.
    pub fn backward(&self, p: &[f32], g: &mut [f32], fw: &UnetForward, deps: &[f32]) -> Result<Vec<f32>, ModelError> {
        super::check_params("unet", self.param_end, p, Some(g))?;
        check_len("unet", "output gradient", deps.len(), fw.eps.len())?;
        let mut dsemb = vec![0.0f32; fw.semb.len()];
        let dx = program::backward(&self.ops, p, g, &fw.tape, deps, Some(&fw.semb), Some(&mut dsemb))?;
        let n = fw.dims.n;
        let demb = silu_backward(&fw.emb, &dsemb)?;
        let de1s = self.time_embed_2.backward(p, g, &fw.e1s, n, &demb)?;
        let de1 = silu_backward(&fw.e1, &de1s)?;
        self.time_embed_0.backward(p, g, &fw.t_emb, n, &de1)?;
        Ok(dx)
    }
}
