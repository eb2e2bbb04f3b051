//! Training losses, each returning the value and the gradient(s) of its inputs (sums in f64):
//! L1 and MSE (mean reduction), the VAE's KL term, least-squares GAN (generator and
//! discriminator sides, as MONAI's `PatchAdversarialLoss(criterion="least_squares")`), and a
//! pluggable perceptual loss (off by default: it needs pretrained 2-D feature weights that are
//! not shipped with this project).

use thiserror::Error;

use crate::layers::Dims;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LossError {
    #[error("{loss}: prediction has {pred} values, target has {target}")]
    Length { loss: &'static str, pred: usize, target: usize },
    #[error("{0}: empty input")]
    Empty(&'static str),
    #[error("perceptual loss: {0}")]
    Perceptual(String),
}

fn check(loss: &'static str, a: &[f32], b: &[f32]) -> Result<(), LossError> {
    if a.len() != b.len() {
        return Err(LossError::Length { loss, pred: a.len(), target: b.len() });
    }
    if a.is_empty() {
        return Err(LossError::Empty(loss));
    }
    Ok(())
}

/// `mean(|pred - target|)`; gradient `sign(pred - target) / n` (0 where equal, as PyTorch).
pub fn l1(pred: &[f32], target: &[f32]) -> Result<(f32, Vec<f32>), LossError> {
    check("l1", pred, target)?;
    let n = pred.len() as f64;
    let loss = pred.iter().zip(target).map(|(&p, &t)| (p as f64 - t as f64).abs()).sum::<f64>() / n;
    let inv = (1.0 / n) as f32;
    let grad = pred
        .iter()
        .zip(target)
        .map(|(&p, &t)| {
            let d = p - t;
            if d > 0.0 {
                inv
            } else if d < 0.0 {
                -inv
            } else {
                0.0
            }
        })
        .collect();
    Ok((loss as f32, grad))
}

/// `mean((pred - target)^2)`; gradient `2 (pred - target) / n`.
pub fn mse(pred: &[f32], target: &[f32]) -> Result<(f32, Vec<f32>), LossError> {
    check("mse", pred, target)?;
    let n = pred.len() as f64;
    let loss = pred.iter().zip(target).map(|(&p, &t)| (p as f64 - t as f64).powi(2)).sum::<f64>() / n;
    let s = (2.0 / n) as f32;
    let grad = pred.iter().zip(target).map(|(&p, &t)| s * (p - t)).collect();
    Ok((loss as f32, grad))
}

/// `mean((x - c)^2)` against a constant target.
fn mse_const(x: &[f32], c: f32, loss: &'static str) -> Result<(f32, Vec<f32>), LossError> {
    if x.is_empty() {
        return Err(LossError::Empty(loss));
    }
    let n = x.len() as f64;
    let v = x.iter().map(|&p| (p as f64 - c as f64).powi(2)).sum::<f64>() / n;
    let s = (2.0 / n) as f32;
    Ok((v as f32, x.iter().map(|&p| s * (p - c)).collect()))
}

/// KL divergence of N(mu, sigma^2) from N(0, 1) as the bundle computes it:
/// `0.5 * sum(mu^2 + sigma^2 - ln(sigma^2) - 1) / batch`. Returns (loss, d mu, d sigma).
pub fn kl(mu: &[f32], sigma: &[f32], batch: usize) -> Result<(f32, Vec<f32>, Vec<f32>), LossError> {
    check("kl", mu, sigma)?;
    if batch == 0 {
        return Err(LossError::Empty("kl"));
    }
    let b = batch as f64;
    let loss = mu
        .iter()
        .zip(sigma)
        .map(|(&m, &s)| {
            let (m, s) = (m as f64, s as f64);
            m * m + s * s - (s * s).ln() - 1.0
        })
        .sum::<f64>()
        * 0.5
        / b;
    let dmu = mu.iter().map(|&m| (m as f64 / b) as f32).collect();
    let dsigma = sigma.iter().map(|&s| ((s as f64 - 1.0 / s as f64) / b) as f32).collect();
    Ok((loss as f32, dmu, dsigma))
}

/// Generator side of the least-squares GAN: `mean((D(fake) - 1)^2)`; gradient on the logits.
pub fn lsgan_generator(fake_logits: &[f32]) -> Result<(f32, Vec<f32>), LossError> {
    mse_const(fake_logits, 1.0, "lsgan_generator")
}

/// Discriminator side: `0.5 * (mean(D(fake)^2) + mean((D(real) - 1)^2))`.
/// Returns (loss, d fake logits, d real logits).
pub fn lsgan_discriminator(fake_logits: &[f32], real_logits: &[f32]) -> Result<(f32, Vec<f32>, Vec<f32>), LossError> {
    let (lf, mut gf) = mse_const(fake_logits, 0.0, "lsgan_discriminator")?;
    let (lr, mut gr) = mse_const(real_logits, 1.0, "lsgan_discriminator")?;
    gf.iter_mut().chain(gr.iter_mut()).for_each(|g| *g *= 0.5);
    Ok((0.5 * (lf + lr), gf, gr))
}

/// A perceptual loss between reconstruction and image (e.g. LPIPS on 2-D slices). The bundle
/// uses one with pretrained ImageNet/RadImageNet feature weights; those weights are NOT shipped
/// with this project, so the trainer runs without it unless a caller supplies an implementation.
pub trait PerceptualLoss: Send + Sync {
    /// Returns the loss and its gradient with respect to `pred`.
    fn loss_and_grad(&self, pred: &[f32], target: &[f32], dims: Dims) -> Result<(f32, Vec<f32>), LossError>;
}
