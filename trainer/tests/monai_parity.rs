//! Parity with MONAI Generative 0.2.3 (tests/fixtures/monai): forward outputs of the
//! autoencoder, discriminator and UNet, and the training losses and every parameter gradient of
//! tests/fixtures/monai/training (VAE L1 + KL with injected noise, discriminator LSGAN, UNet
//! epsilon MSE at t = 321).
#![allow(clippy::excessive_precision)]

mod common;

use common::rel_l2;
use ldm_test_support::{fixture_decoder, fixture_encoder, monai, read_npy, read_safetensors, Tensors};
use ldm_trainer::layers::Dims;
use ldm_trainer::losses;
use ldm_trainer::models::autoencoder::AutoencoderKL;
use ldm_trainer::models::discriminator::{DiscriminatorConfig, PatchDiscriminator};
use ldm_trainer::models::unet::DiffusionUnet;
use ldm_trainer::params::ParamStore;
use ldm_trainer::schedule;
use ldm_weights::SchedulerConfig;

fn dims(shape: &[usize]) -> Dims {
    Dims::new(shape[0], shape[1], shape[2], shape[3], shape[4])
}

fn npy(rel: &str) -> (Dims, Vec<f32>) {
    let (s, d) = read_npy(&monai(rel));
    (dims(&s), d)
}

/// Loads `prefix.<key>` for every store tensor and checks the store covers the fixture
/// (except tensors listed in `unused`).
fn load(store: &mut ParamStore, t: &Tensors, prefix: &str, unused: &dyn Fn(&str) -> bool) {
    store
        .load_with(|name| {
            let key = name.strip_prefix(prefix)?.strip_prefix('.')?;
            t.get(key).map(|(s, v)| (s.clone(), v.as_slice()))
        })
        .unwrap();
    for k in t.keys() {
        if !unused(k) {
            assert!(store.entry(&format!("{prefix}.{k}")).is_some(), "fixture tensor {k} has no parameter");
        }
    }
}

fn close(name: &str, got: f32, want: f32, tol: f64) {
    let err = (got as f64 - want as f64).abs() / (want as f64).abs().max(1e-12);
    assert!(err <= tol, "{name}: {got} vs {want} (rel {err:e})");
    println!("{name}: {got} vs {want} rel {err:.2e}");
}

/// Compares every gradient; returns the worst relative L2 error.
fn compare_grads(store: &ParamStore, grads: &Tensors, prefix: &str, unused: &dyn Fn(&str) -> bool, tol: f64) -> f64 {
    let mut worst = (0.0f64, String::new());
    let mut checked = 0;
    for (k, (_, want)) in grads {
        if unused(k) {
            assert!(want.iter().all(|&v| v == 0.0), "{k}: expected a zero gradient");
            continue;
        }
        let got = store.grad_of(&format!("{prefix}.{k}")).unwrap_or_else(|| panic!("no parameter for gradient {k}"));
        let e = match k.strip_suffix("to_k.bias") {
            // The key bias shifts every score of a query row equally, so softmax cancels it: its
            // true gradient is exactly 0 and both sides hold rounding noise. Measure that noise
            // against the scale of the same layer's weight gradient instead.
            Some(stem) => {
                let l2 = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>().sqrt();
                let w = &grads[&format!("{stem}to_k.weight")].1;
                l2(&mut got.iter().zip(want).map(|(&a, &b)| a as f64 - b as f64)) / l2(&mut w.iter().map(|&x| x as f64)).max(1e-30)
            }
            None => rel_l2(got, want),
        };
        assert!(e < tol, "gradient {k}: rel L2 {e:e}");
        if e > worst.0 {
            worst = (e, k.clone());
        }
        checked += 1;
    }
    assert_eq!(checked, store.entries.len(), "every parameter must have a fixture gradient");
    println!("{prefix}: {checked} gradients, worst rel L2 {:.2e} ({})", worst.0, worst.1);
    worst.0
}

fn fixture_autoencoder(store: &mut ParamStore) -> AutoencoderKL {
    let (enc, dec) = (fixture_encoder(), fixture_decoder());
    let ae = AutoencoderKL::new(store, &enc, &dec).unwrap();
    let t = read_safetensors(&monai("autoencoder/autoencoder.safetensors"));
    load(store, &t, "autoencoder", &|_| false);
    assert_eq!(store.len(), 390993);
    ae
}

#[test]
fn autoencoder_encode_decode_match_monai() {
    let mut store = ParamStore::new();
    let ae = fixture_autoencoder(&mut store);
    let (xd, x) = npy("autoencoder/encode_image.npy");
    let (mu, sigma, ld) = ae.encode(&store.data, &x, xd).unwrap();
    assert_eq!(ld, Dims::new(1, 8, 6, 8, 4));
    let e_mu = rel_l2(&mu, &npy("autoencoder/encode_mu.npy").1);
    let e_sigma = rel_l2(&sigma, &npy("autoencoder/encode_sigma.npy").1);
    println!("encode: mu rel L2 {e_mu:.2e}, sigma rel L2 {e_sigma:.2e}");
    assert!(e_mu < 1e-5 && e_sigma < 1e-5);
    let (zd, z) = npy("autoencoder/decode_z.npy");
    let (img, yd) = ae.decode(&store.data, &z, zd).unwrap();
    assert_eq!(yd, Dims::new(1, 1, 24, 32, 16));
    let e = rel_l2(&img, &npy("autoencoder/decode_image.npy").1);
    println!("decode: rel L2 {e:.2e}");
    assert!(e < 1e-5);
}

#[test]
fn autoencoder_training_gradients_match_monai() {
    let mut store = ParamStore::new();
    let ae = fixture_autoencoder(&mut store);
    let (xd, x) = npy("autoencoder/encode_image.npy");
    let (_, noise) = npy("training/ae_sampling_noise.npy");
    let p = store.data.clone();
    let fw = ae.forward_train(&p, &x, xd, &noise).unwrap();
    let e = rel_l2(&fw.recon, &npy("training/ae_reconstruction.npy").1);
    println!("reconstruction rel L2 {e:.2e}");
    assert!(e < 1e-5);
    let (l1, dl1) = losses::l1(&fw.recon, &x).unwrap();
    let (kl, dmu, dsigma) = losses::kl(&fw.mu, &fw.sigma, xd.n).unwrap();
    let kl_w = 0.01f32;
    close("l1", l1, 0.4717862606048584, 1e-5);
    close("kl", kl, 7.248453140258789, 1e-5);
    close("loss", l1 + kl_w * kl, 0.5442708134651184, 1e-5);
    let dmu: Vec<f32> = dmu.iter().map(|v| v * kl_w).collect();
    let dsigma: Vec<f32> = dsigma.iter().map(|v| v * kl_w).collect();
    ae.backward(&p, &mut store.grad, &fw, &dl1, &dmu, &dsigma).unwrap();
    let grads = read_safetensors(&monai("training/autoencoder_grads.safetensors"));
    compare_grads(&store, &grads, "autoencoder", &|_| false, 1e-4);
}

fn fixture_discriminator(store: &mut ParamStore) -> PatchDiscriminator {
    let cfg = DiscriminatorConfig { in_channels: 1, num_channels: 8, num_layers_d: 3, out_channels: 1 };
    let d = PatchDiscriminator::new(store, &cfg).unwrap();
    let t = read_safetensors(&monai("discriminator/discriminator.safetensors"));
    load(store, &t, "discriminator", &|_| false);
    assert_eq!(store.len(), 176649);
    d
}

#[test]
fn discriminator_logits_and_gradients_match_monai() {
    let mut store = ParamStore::new();
    let disc = fixture_discriminator(&mut store);
    let p = store.data.clone();
    let (xd, real) = npy("discriminator/image.npy");
    let fr = disc.forward(&p, &real, xd, true).unwrap();
    assert_eq!(fr.logit_dims, Dims::new(1, 1, 4, 4, 3));
    let e = rel_l2(&fr.logits, &npy("discriminator/logits.npy").1);
    println!("discriminator logits rel L2 {e:.2e}");
    assert!(e < 1e-5);
    let (fd, fake) = npy("training/disc_fake.npy");
    let ff = disc.forward(&p, &fake, fd, true).unwrap();
    let (loss, dfake, dreal) = losses::lsgan_discriminator(&ff.logits, &fr.logits).unwrap();
    close("discriminator loss", loss, 0.7894997000694275, 1e-5);
    disc.backward(&p, &mut store.grad, &ff, &dfake).unwrap();
    disc.backward(&p, &mut store.grad, &fr, &dreal).unwrap();
    // The gradients at and after the last LeakyReLU do not depend on its kink (see
    // `discriminator_gradients_match_monai_at_the_kink` for the rest).
    let grads = read_safetensors(&monai("training/discriminator_grads.safetensors"));
    for k in ["final_conv.conv.weight", "final_conv.conv.bias"] {
        let e = rel_l2(store.grad_of(&format!("discriminator.{k}")).unwrap(), &grads[k].1);
        println!("{k}: rel L2 {e:.2e}");
        assert!(e < 1e-4, "{k}: {e:e}");
    }
}

fn fixture_unet(store: &mut ParamStore) -> DiffusionUnet {
    let cfg = ldm_test_support::fixture_unet();
    let u = DiffusionUnet::new(store, &cfg).unwrap();
    let t = read_safetensors(&monai("unet/unet.safetensors"));
    let proj: usize = t.iter().filter(|(k, _)| k.contains("proj_attn")).map(|(_, (_, v))| v.len()).sum();
    load(store, &t, "unet", &|k| k.contains("proj_attn"));
    assert_eq!(store.len() + proj, 1095656);
    u
}

#[test]
fn unet_forward_matches_monai() {
    let mut store = ParamStore::new();
    let unet = fixture_unet(&mut store);
    let (xd, x) = npy("unet/x.npy");
    for t in [0u32, 500, 999] {
        let fw = unet.forward(&store.data, &x, xd, &[t as f32], false).unwrap();
        let e = rel_l2(&fw.eps, &npy(&format!("unet/eps_t{t}.npy")).1);
        println!("unet t={t}: rel L2 {e:.2e}");
        assert!(e < 1e-5, "t={t}: {e:e}");
    }
}

#[test]
fn unet_training_gradients_match_monai() {
    let mut store = ParamStore::new();
    let unet = fixture_unet(&mut store);
    let (xd, x0) = npy("training/unet_x0.npy");
    let (_, eps) = npy("training/unet_eps.npy");
    let (_, x_t_want) = npy("training/unet_x_t.npy");
    let ac = schedule::alphas_cumprod(&SchedulerConfig::bundle()).unwrap();
    let x_t = schedule::add_noise(&x0, &eps, ac[321]);
    let e = rel_l2(&x_t, &x_t_want);
    println!("x_t rel L2 {e:.2e}");
    assert!(e < 1e-6);
    let p = store.data.clone();
    let fw = unet.forward(&p, &x_t_want, xd, &[321.0], true).unwrap();
    let (loss, dpred) = losses::mse(&fw.eps, &eps).unwrap();
    close("unet loss", loss, 1.0497812032699585, 1e-5);
    unet.backward(&p, &mut store.grad, &fw, &dpred).unwrap();
    let grads = read_safetensors(&monai("training/unet_grads.safetensors"));
    compare_grads(&store, &grads, "unet", &|k| k.contains("proj_attn"), 1e-4);
}

#[test]
fn alphas_cumprod_match_monai() {
    let (_, want) = read_npy(&monai("scheduler/alphas_cumprod.npy"));
    let got = schedule::alphas_cumprod(&SchedulerConfig::bundle()).unwrap();
    let e = rel_l2(&got, &want);
    let worst = got.iter().zip(&want).map(|(a, b)| ((a - b) / b).abs()).fold(0.0f32, f32::max);
    println!("alphas_cumprod rel L2 {e:.2e}, worst element rel {worst:.2e}");
    assert!(e < 1e-6 && worst < 1e-5);
}


/// The discriminator gradients, with the one knife-edge voxel resolved as MONAI's float32 did.
///
/// On the real image, one pre-activation of the last LeakyReLU (channel 15, value 6.9e-7 in this
/// port) sits on the kink: float32 rounding decides the branch. MONAI evaluated it as negative
/// (slope 0.2), this port as positive (slope 1); with the plain backward every gradient upstream
/// of that channel differs by ~2e-2 while all other channels match to ~1e-6. Here the backward
/// is run in two halves with that LeakyReLU taking the negative branch for |x| < 1e-5, and then
/// every gradient must match to 1e-4.
#[test]
fn discriminator_gradients_match_monai_at_the_kink() {
    use ldm_trainer::layers::act::{leaky_relu_backward, leaky_relu_forward};
    use ldm_trainer::models::program::{backward, forward, Op};
    let mut store = ParamStore::new();
    let disc = fixture_discriminator(&mut store);
    let p = store.data.clone();
    let n = disc.ops.len();
    let (body, head) = disc.ops.split_at(n - 2);
    assert!(matches!(head[0], Op::LeakyRelu(_)) && matches!(head[1], Op::Conv(_)));
    let Op::Conv(final_conv) = &head[1] else { unreachable!() };
    let mut logits = Vec::new();
    let mut saved = Vec::new();
    for img in ["training/disc_fake.npy", "discriminator/image.npy"] {
        let (xd, x) = npy(img);
        let (h, hd, tape) = forward(body, &p, &x, xd, None, true).unwrap();
        let a = leaky_relu_forward(&h, 0.2);
        let (y, _) = final_conv.forward(&p, &a, hd).unwrap();
        logits.push(y);
        saved.push((h, hd, a, tape));
    }
    let (loss, dfake, dreal) = losses::lsgan_discriminator(&logits[0], &logits[1]).unwrap();
    close("discriminator loss", loss, 0.7894997000694275, 1e-5);
    let mut ties = 0;
    for ((h, hd, a, tape), dl) in saved.iter().zip([dfake, dreal]) {
        let da = final_conv.backward(&p, &mut store.grad, a, *hd, &dl).unwrap();
        let tied: Vec<f32> = h.iter().map(|&v| if v.abs() < 1e-5 { -1.0 } else { v }).collect();
        ties += h.iter().filter(|v| v.abs() < 1e-5).count();
        let dh = leaky_relu_backward(&tied, &da, 0.2).unwrap();
        backward(body, &p, &mut store.grad, tape, &dh, None, None).unwrap();
    }
    assert_eq!(ties, 1, "exactly one pre-activation sits on the kink");
    let grads = read_safetensors(&monai("training/discriminator_grads.safetensors"));
    compare_grads(&store, &grads, "discriminator", &|_| false, 1e-4);
}
