//! `AutoencoderKL` (generative 0.2.3, no attention): encoder -> (mu, log_var clamped to
//! [-30, 20], sigma = exp(log_var / 2)), z = mu + sigma * noise, decoder. The layers come from
//! `ldm_weights::network::{encoder, decoder}`; parameters are registered as
//! `autoencoder.<generative key>` in one [`ParamStore`].

use ldm_weights::network;
use ldm_weights::{DecoderConfig, EncoderConfig};

use super::program::{self, Op, Tape};
use super::ModelError;
use crate::layers::conv3d::Conv3d;
use crate::layers::{check_len, Dims};
use crate::params::ParamStore;

/// mu, sigma, latent dims, encoder tape, encoder output h and its dims, raw log-variance.
type EncodeParts = (Vec<f32>, Vec<f32>, Dims, Tape, Vec<f32>, Dims, Vec<f32>);

#[derive(Debug, Clone, PartialEq)]
pub struct AutoencoderKL {
    pub encoder_config: EncoderConfig,
    pub decoder_config: DecoderConfig,
    pub encoder: Vec<Op>,
    pub quant_conv_mu: Conv3d,
    pub quant_conv_log_sigma: Conv3d,
    pub post_quant_conv: Conv3d,
    pub decoder: Vec<Op>,
    /// End of this model's tensors in its parameter store.
    pub param_end: usize,
}

/// Everything the backward of one training forward needs, plus the outputs.
#[derive(Debug, Clone)]
pub struct AeForward {
    pub mu: Vec<f32>,
    pub sigma: Vec<f32>,
    pub z: Vec<f32>,
    pub recon: Vec<f32>,
    pub latent_dims: Dims,
    pub image_dims: Dims,
    enc_tape: Tape,
    h: Vec<f32>,
    h_dims: Dims,
    log_var_raw: Vec<f32>,
    noise: Vec<f32>,
    dec_tape: Tape,
}

fn levels(name: &str, ch: &[u32], res: &[u32], groups: u32) -> Result<(), ModelError> {
    if ch.is_empty() || ch.len() != res.len() {
        return Err(ModelError::Config(format!("{name}: {} channel levels but {} res-block counts", ch.len(), res.len())));
    }
    if groups == 0 || ch.iter().any(|&c| c == 0 || c % groups != 0) {
        return Err(ModelError::Config(format!("{name}: channels {ch:?} must be positive multiples of {groups} groups")));
    }
    Ok(())
}

impl AutoencoderKL {
    /// Registers every parameter (zero-initialised) in `store`.
    pub fn new(store: &mut ParamStore, enc: &EncoderConfig, dec: &DecoderConfig) -> Result<Self, ModelError> {
        levels("encoder", &enc.num_channels, &enc.num_res_blocks, enc.norm_num_groups)?;
        levels("decoder", &dec.num_channels, &dec.num_res_blocks, dec.norm_num_groups)?;
        if enc.latent_channels != dec.latent_channels || enc.latent_channels == 0 {
            return Err(ModelError::Config(format!(
                "encoder latent channels {} and decoder latent channels {} differ (or are 0)",
                enc.latent_channels, dec.latent_channels
            )));
        }
        // Registration order: encoder, its heads, post_quant_conv, decoder.
        let enc_net = network::encoder(enc);
        let mut encoder = program::from_layers(store, &enc_net.layers, enc_net.norm)?;
        if let Some(Op::Conv(conv_in)) = encoder.first_mut() {
            conv_in.input_grad = false; // the image gradient is never needed
        }
        let quant_conv_mu = program::conv3d(store, &enc_net.quant_conv_mu)?;
        let quant_conv_log_sigma = program::conv3d(store, &enc_net.quant_conv_log_sigma)?;
        let dec_net = network::decoder(dec);
        let post_quant_conv = program::conv3d(store, &dec_net.post_quant_conv)?;
        let decoder = program::from_layers(store, &dec_net.layers, dec_net.norm)?;
        Ok(AutoencoderKL {
            encoder_config: enc.clone(),
            decoder_config: dec.clone(),
            encoder,
            quant_conv_mu,
            quant_conv_log_sigma,
            post_quant_conv,
            decoder,
            param_end: store.len(),
        })
    }

    /// Spatial extents must be divisible by 2^(levels-1).
    pub fn check_image(&self, xd: Dims) -> Result<(), ModelError> {
        let f = 1usize << (self.encoder_config.num_channels.len() - 1);
        if xd.n == 0 || xd.c != self.encoder_config.in_channels as usize || [xd.d, xd.h, xd.w].iter().any(|&e| e == 0 || e % f != 0) {
            return Err(ModelError::Input(format!(
                "image shape {:?} must be [N>0, {}, D, H, W] with D, H, W positive multiples of {f}",
                xd.as_array(),
                self.encoder_config.in_channels
            )));
        }
        Ok(())
    }

    fn encode_inner(&self, p: &[f32], x: &[f32], xd: Dims, keep: bool) -> Result<EncodeParts, ModelError> {
        self.check_image(xd)?;
        super::check_params("autoencoder", self.param_end, p, None)?;
        check_len("autoencoder", "image", x.len(), xd.numel())?;
        let (h, hd, tape) = program::forward(&self.encoder, p, x, xd, None, keep)?;
        let (mu, ld) = self.quant_conv_mu.forward(p, &h, hd)?;
        let (raw, _) = self.quant_conv_log_sigma.forward(p, &h, hd)?;
        let sigma = raw.iter().map(|&v| (v.clamp(-30.0, 20.0) / 2.0).exp()).collect();
        Ok((mu, sigma, ld, tape, h, hd, raw))
    }

    /// `encode(x) -> (mu, sigma, latent dims)` without saving activations.
    pub fn encode(&self, p: &[f32], x: &[f32], xd: Dims) -> Result<(Vec<f32>, Vec<f32>, Dims), ModelError> {
        let (mu, sigma, ld, ..) = self.encode_inner(p, x, xd, false)?;
        Ok((mu, sigma, ld))
    }

    /// `decode(z)`: post_quant_conv then the decoder, without saving activations.
    pub fn decode(&self, p: &[f32], z: &[f32], zd: Dims) -> Result<(Vec<f32>, Dims), ModelError> {
        super::check_params("autoencoder", self.param_end, p, None)?;
        check_len("autoencoder", "latent", z.len(), zd.numel())?;
        let (q, qd) = self.post_quant_conv.forward(p, z, zd)?;
        let (y, yd, _) = program::forward(&self.decoder, p, &q, qd, None, false)?;
        Ok((y, yd))
    }

    /// Training forward: encode, z = mu + sigma * noise (noise has the latent's shape), decode;
    /// saves everything for [`AutoencoderKL::backward`].
    pub fn forward_train(&self, p: &[f32], x: &[f32], xd: Dims, noise: &[f32]) -> Result<AeForward, ModelError> {
        let (mu, sigma, ld, enc_tape, h, h_dims, log_var_raw) = self.encode_inner(p, x, xd, true)?;
        check_len("autoencoder", "sampling noise", noise.len(), mu.len())?;
        let z: Vec<f32> = mu.iter().zip(&sigma).zip(noise).map(|((m, s), n)| m + s * n).collect();
        let (q, qd) = self.post_quant_conv.forward(p, &z, ld)?;
        let (recon, rd, dec_tape) = program::forward(&self.decoder, p, &q, qd, None, true)?;
        Ok(AeForward {
            mu,
            sigma,
            z,
            recon,
            latent_dims: ld,
            image_dims: rd,
            enc_tape,
            h,
            h_dims,
            log_var_raw,
            noise: noise.to_vec(),
            dec_tape,
        })
    }

    /// Backward from d(recon) plus direct gradients on mu and sigma (the KL term's); accumulates
    /// all parameter gradients into `g`. The image gradient is not computed (its first conv has
    /// `input_grad == false`): the returned vector is empty.
    pub fn backward(
        &self,
        p: &[f32],
        g: &mut [f32],
        fw: &AeForward,
        drecon: &[f32],
        dmu: &[f32],
        dsigma: &[f32],
    ) -> Result<Vec<f32>, ModelError> {
        super::check_params("autoencoder", self.param_end, p, Some(g))?;
        check_len("autoencoder", "reconstruction gradient", drecon.len(), fw.recon.len())?;
        check_len("autoencoder", "mu gradient", dmu.len(), fw.mu.len())?;
        check_len("autoencoder", "sigma gradient", dsigma.len(), fw.sigma.len())?;
        let dq = program::backward(&self.decoder, p, g, &fw.dec_tape, drecon, None, None)?;
        let dz = self.post_quant_conv.backward(p, g, &fw.z, fw.latent_dims, &dq)?;
        let mut dmu_t = dmu.to_vec();
        dmu_t.iter_mut().zip(&dz).for_each(|(a, b)| *a += b);
        // d raw log-var: (dsigma + dz * noise) * sigma / 2, zero where the clamp is active.
        let draw: Vec<f32> = (0..dz.len())
            .map(|i| {
                let r = fw.log_var_raw[i];
                if (-30.0..=20.0).contains(&r) {
                    (dsigma[i] + dz[i] * fw.noise[i]) * fw.sigma[i] * 0.5
                } else {
                    0.0
                }
            })
            .collect();
        let mut dh = self.quant_conv_mu.backward(p, g, &fw.h, fw.h_dims, &dmu_t)?;
        let dh2 = self.quant_conv_log_sigma.backward(p, g, &fw.h, fw.h_dims, &draw)?;
        dh.iter_mut().zip(&dh2).for_each(|(a, b)| *a += b);
        Ok(program::backward(&self.encoder, p, g, &fw.enc_tape, &dh, None, None)?)
    }
}
