//! The checks of every call's input, in one place: each buffer's length against the runtime's
//! latent and volume sizes and batch, and the network the call needs present in the model.
//! `Runtime` applies them before it dispatches (so both backends take checked input), and the
//! CUDA executor's direct entry points apply the same ones.

use ldm_weights::ModelConfig;

use crate::error::RuntimeError;

/// What a runtime's buffers must hold and which networks it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inputs {
    /// Floats of one latent.
    latent: usize,
    /// Floats of one decoded volume.
    volume: usize,
    /// Volumes per `generate` call.
    batch: usize,
    unet: bool,
    decoder: bool,
}

fn check_len(what: &'static str, got: usize, expected: usize) -> Result<(), RuntimeError> {
    if got == expected {
        Ok(())
    } else {
        Err(RuntimeError::BufferSize { what, got, expected })
    }
}

impl Inputs {
    pub fn new(config: &ModelConfig, latent: [usize; 4], volume: [usize; 4], batch: usize) -> Inputs {
        Inputs {
            latent: latent.iter().product(),
            volume: volume.iter().product(),
            batch,
            unet: config.unet.is_some(),
            decoder: config.decoder.is_some(),
        }
    }

    fn needs_unet(&self) -> Result<(), RuntimeError> {
        if self.unet {
            Ok(())
        } else {
            Err(RuntimeError::MissingNetwork("unet"))
        }
    }

    fn needs_decoder(&self) -> Result<(), RuntimeError> {
        if self.decoder {
            Ok(())
        } else {
            Err(RuntimeError::MissingNetwork("decoder"))
        }
    }

    /// `unet_forward(x, t, eps)`: one latent in, one out, and a UNet.
    pub fn unet_forward(&self, x: usize, eps: usize) -> Result<(), RuntimeError> {
        check_len("UNet input", x, self.latent)?;
        check_len("UNet output", eps, self.latent)?;
        self.needs_unet()
    }

    /// `decode(latent, out)`: one latent in, a decoder, one volume out.
    pub fn decode(&self, latent: usize, out: usize) -> Result<(), RuntimeError> {
        check_len("latent", latent, self.latent)?;
        self.needs_decoder()?;
        check_len("decoded volume", out, self.volume)
    }

    /// `generate` (`noise` None) or `generate_from_noise_seeded`: both networks, `batch` volumes
    /// out, and `batch` latents of initial noise when given.
    pub fn generate(&self, out: usize, noise: Option<usize>) -> Result<(), RuntimeError> {
        self.needs_unet()?;
        self.needs_decoder()?;
        check_len("output volumes", out, self.batch * self.volume)?;
        match noise {
            Some(noise) => check_len("initial noise", noise, self.batch * self.latent),
            None => Ok(()),
        }
    }

    /// `sample_latent(noise, .., latent_out)`: one latent in and out, and a UNet.
    pub fn sample_latent(&self, noise: usize, latent_out: usize) -> Result<(), RuntimeError> {
        if noise != self.latent || latent_out != self.latent {
            return Err(RuntimeError::BufferSize { what: "latent", got: noise.min(latent_out), expected: self.latent });
        }
        self.needs_unet()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(unet: bool, decoder: bool) -> Inputs {
        let mut cfg = crate::test_models::small_model_config([4, 4, 4, 4]);
        if !unet {
            cfg.unet = None;
        }
        if !decoder {
            cfg.decoder = None;
        }
        Inputs::new(&cfg, [4, 4, 4, 4], [1, 8, 8, 8], 2)
    }

    fn size(r: Result<(), RuntimeError>) -> Option<(&'static str, usize, usize)> {
        match r {
            Err(RuntimeError::BufferSize { what, got, expected }) => Some((what, got, expected)),
            _ => None,
        }
    }

    #[test]
    fn lengths_are_named_and_checked_in_order() {
        let i = inputs(true, true);
        assert!(i.unet_forward(256, 256).is_ok());
        assert_eq!(size(i.unet_forward(255, 1)), Some(("UNet input", 255, 256)));
        assert_eq!(size(i.unet_forward(256, 1)), Some(("UNet output", 1, 256)));
        assert!(i.decode(256, 512).is_ok());
        assert_eq!(size(i.decode(256, 511)), Some(("decoded volume", 511, 512)));
        assert!(i.generate(1024, None).is_ok());
        assert!(i.generate(1024, Some(512)).is_ok());
        assert_eq!(size(i.generate(512, Some(512))), Some(("output volumes", 512, 1024)));
        assert_eq!(size(i.generate(1024, Some(256))), Some(("initial noise", 256, 512)));
        assert!(i.sample_latent(256, 256).is_ok());
        assert_eq!(size(i.sample_latent(256, 3)), Some(("latent", 3, 256)));
    }

    #[test]
    fn a_missing_network_is_named() {
        let missing = |r: Result<(), RuntimeError>| match r {
            Err(RuntimeError::MissingNetwork(n)) => n,
            other => panic!("{other:?}"),
        };
        let no_unet = inputs(false, true);
        assert_eq!(missing(no_unet.unet_forward(256, 256)), "unet");
        assert_eq!(missing(no_unet.generate(1024, None)), "unet");
        assert_eq!(missing(no_unet.sample_latent(256, 256)), "unet");
        assert!(no_unet.decode(256, 512).is_ok());
        let no_decoder = inputs(true, false);
        assert_eq!(missing(no_decoder.decode(256, 512)), "decoder");
        assert_eq!(missing(no_decoder.generate(1024, None)), "decoder");
        // A length is checked before the network the call needs, as the CPU backend always did.
        assert_eq!(size(no_decoder.decode(1, 512)), Some(("latent", 1, 256)));
    }
}
