//! Data parallelism against one process: W ranks (threads joined by the real TCP rendezvous on
//! 127.0.0.1), each training on its shard of the global batch and averaging its gradients
//! bucket by bucket through the host group, produce the gradient one process computes on the
//! whole batch (to 1e-6 relative), bitwise the same on every rank; the same for both networks
//! of the VAE-GAN step and for the diffusion step.

mod common;

use std::time::Duration;

use common::{rel_l2, tiny_diffusion_config, tiny_vae_config, Rng};
use ldm_dist::{rendezvous, HostGroup, LaunchKind, RendezvousOptions, Shard, WorldSpec};
use ldm_trainer::layers::Dims;
use ldm_trainer::train::diffusion::DiffusionTrainer;
use ldm_trainer::train::distributed::{BatchPart, DataParallel, Network, Parallel};
use ldm_trainer::train::vae_gan::VaeGanTrainer;

/// The groups of a world of `w` ranks on an ephemeral local port.
fn groups(w: usize) -> Vec<HostGroup> {
    let port = ldm_dist::launch::free_port().unwrap();
    let handles: Vec<_> = (0..w)
        .map(|rank| {
            std::thread::spawn(move || {
                let spec = WorldSpec {
                    kind: LaunchKind::Torchrun,
                    rank,
                    world_size: w,
                    local_rank: rank,
                    local_world_size: Some(w),
                    master_addr: Some("127.0.0.1".into()),
                    master_port: Some(port),
                };
                let o = RendezvousOptions {
                    timeout: Duration::from_secs(10),
                    op_timeout: Duration::from_secs(60),
                    ..Default::default()
                };
                rendezvous(&spec, &o).unwrap().0
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Every gradient handed to the reduction, after it (in call order).
type Captured = Vec<(Network, Vec<f32>)>;

/// Runs `step(part)` on every rank with its slice of the batch, averaging through small
/// buckets (many per network); returns each rank's captured gradients.
fn on_ranks<T: Send>(
    w: usize,
    make: impl Fn() -> T + Sync,
    stores: impl Fn(&T) -> Vec<(Network, ldm_trainer::params::ParamStore)> + Sync,
    step: impl Fn(&mut T, usize, &mut BatchPart) + Sync,
) -> Vec<Captured> {
    let gs = groups(w);
    std::thread::scope(|s| {
        let hs: Vec<_> = gs
            .into_iter()
            .map(|g| {
                let (make, stores, step) = (&make, &stores, &step);
                s.spawn(move || {
                    let mut t = make();
                    let mut dp = DataParallel::new(Some(Parallel {
                        group: &g,
                        bucket_mb: 0.002,
                    }));
                    for (net, st) in stores(&t) {
                        dp.plan(net, &st).unwrap();
                    }
                    let mut got: Captured = Vec::new();
                    let mut reduce = |net: Network, grad: &mut [f32]| {
                        dp.reduce(net, grad)?;
                        got.push((net, grad.to_vec()));
                        Ok(())
                    };
                    let mut part = BatchPart::new(Shard::new(g.rank(), w).unwrap(), &mut reduce);
                    step(&mut t, g.rank(), &mut part);
                    got
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The same step in one process on the whole batch, capturing its gradients.
fn single<T>(mut t: T, step: impl Fn(&mut T, &mut BatchPart)) -> Captured {
    let mut got: Captured = Vec::new();
    let mut capture = |net: Network, grad: &mut [f32]| {
        got.push((net, grad.to_vec()));
        Ok(())
    };
    let mut part = BatchPart::new(Shard::single(), &mut capture);
    step(&mut t, &mut part);
    got
}

fn compare(ranks: &[Captured], whole: &Captured, expect: &[Network]) {
    assert_eq!(whole.iter().map(|g| g.0).collect::<Vec<_>>(), expect);
    for r in ranks {
        assert_eq!(r.len(), whole.len());
        for ((net, g), (_, want)) in r.iter().zip(whole) {
            let e = rel_l2(g, want);
            println!("{net:?}: relative L2 {e:e}");
            assert!(
                e <= 1e-6,
                "{net:?}: averaged gradient differs from the whole batch's by {e:e}"
            );
            assert!(want.iter().any(|&v| v != 0.0));
        }
        let bits = |c: &Captured| {
            c.iter()
                .flat_map(|(_, g)| g.iter().map(|v| v.to_bits()))
                .collect::<Vec<_>>()
        };
        assert!(bits(r) == bits(&ranks[0]), "ranks hold different gradients");
    }
}

#[test]
fn averaged_diffusion_gradient_of_shards_equals_the_whole_batch_gradient() {
    let (w, b) = (2usize, 2usize);
    let ld = [4usize, 8, 8, 8];
    let per: usize = ld.iter().product();
    let lat = Rng(5).vec(w * b * per, 1.0);
    let make = || DiffusionTrainer::new(tiny_diffusion_config(), 3).unwrap();
    let whole = single(make(), |t, part| {
        t.train_step_part(&lat, Dims::new(w * b, ld[0], ld[1], ld[2], ld[3]), part)
            .unwrap();
    });
    let ranks = on_ranks(
        w,
        make,
        |t| vec![(Network::Unet, t.params.clone())],
        |t, r, part| {
            t.train_step_part(
                &lat[r * b * per..(r + 1) * b * per],
                Dims::new(b, ld[0], ld[1], ld[2], ld[3]),
                part,
            )
            .unwrap();
        },
    );
    compare(&ranks, &whole, &[Network::Unet]);
}

#[test]
fn averaged_vae_gan_gradients_of_shards_equal_the_whole_batch_gradients() {
    let (w, b, s) = (2usize, 1usize, 16usize);
    let per = s * s * s;
    let images = Rng(9)
        .vec(w * b * per, 0.5)
        .into_iter()
        .map(|v| v + 0.5)
        .collect::<Vec<f32>>();
    // Adversarial terms from the first step, one discriminator update: both networks' gradients.
    let cfg = || {
        let mut c = tiny_vae_config();
        c.adv_start_step = 0;
        c.d_train_steps = 1;
        c
    };
    let make = || VaeGanTrainer::new(cfg(), 4).unwrap();
    let whole = single(make(), |t, part| {
        t.train_step_part(&images, Dims::new(w * b, 1, s, s, s), part)
            .unwrap();
    });
    let ranks = on_ranks(
        w,
        make,
        |t| {
            vec![
                (Network::Autoencoder, t.ae_params.clone()),
                (Network::Discriminator, t.disc_params.clone()),
            ]
        },
        |t, r, part| {
            t.train_step_part(
                &images[r * b * per..(r + 1) * b * per],
                Dims::new(b, 1, s, s, s),
                part,
            )
            .unwrap();
        },
    );
    compare(
        &ranks,
        &whole,
        &[Network::Discriminator, Network::Autoencoder],
    );
}
