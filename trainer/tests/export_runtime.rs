//! Export to the blob and cross-check with the runtime: the blob written from trained stores
//! loads in ldm-runtime, whose UNet forward and decode equal the trainer's forwards, and it
//! generates a finite volume.

mod common;

use common::{rel_l2, Rng};
use ldm_runtime::{Options, Runtime};
use ldm_trainer::export::{export_blob, ExportSpec};
use ldm_trainer::layers::Dims;
use ldm_trainer::models::autoencoder::AutoencoderKL;
use ldm_trainer::models::unet::DiffusionUnet;
use ldm_trainer::params::ParamStore;
use ldm_weights::{Blob, DType, DecoderConfig, EncoderConfig, OutputGeometry, Provenance, SchedulerConfig, UnetConfig};

/// Random weights with every tensor mattering (norm scales around 1).
fn randomise(store: &mut ParamStore, seed: u64) {
    let mut rng = Rng(seed);
    let entries = store.entries.clone();
    for e in entries {
        let v = e.param.of_mut(&mut store.data);
        let fan: usize = e.shape.iter().skip(1).product::<usize>().max(1);
        let norm_weight = e.shape.len() == 1 && e.name.contains("norm") && e.name.ends_with(".weight")
            || e.name.ends_with("out.0.weight")
            || (e.shape.len() == 1 && e.name.contains(".blocks.") && e.name.ends_with(".weight"));
        for x in v.iter_mut() {
            *x = if norm_weight { 1.0 + 0.2 * rng.uniform() } else { rng.uniform() / (fan as f32).sqrt() };
        }
    }
}

#[test]
fn exported_blob_runs_in_the_runtime_and_matches_the_trainer() {
    let enc = EncoderConfig { in_channels: 1, num_channels: vec![8, 16], num_res_blocks: vec![1, 1], latent_channels: 4, norm_num_groups: 4, norm_eps: 1e-6 };
    let dec = DecoderConfig { latent_channels: 4, num_channels: vec![8, 16], num_res_blocks: vec![1, 1], out_channels: 1, norm_num_groups: 4, norm_eps: 1e-6 };
    let ucfg = UnetConfig {
        in_channels: 4,
        out_channels: 4,
        num_channels: vec![8, 16],
        attention_levels: vec![false, true],
        num_head_channels: vec![0, 8],
        num_res_blocks: vec![1, 1],
        norm_num_groups: 4,
        norm_eps: 1e-6,
        attention_output_projection: false,
    };
    let mut ae_store = ParamStore::new();
    let ae = AutoencoderKL::new(&mut ae_store, &enc, &dec).unwrap();
    randomise(&mut ae_store, 1);
    let mut u_store = ParamStore::new();
    let unet = DiffusionUnet::new(&mut u_store, &ucfg).unwrap();
    randomise(&mut u_store, 2);
    let mut sched = SchedulerConfig::bundle();
    sched.default_steps = 3;
    let spec = ExportSpec {
        autoencoder: Some((&ae, &ae_store)),
        include_encoder: true,
        unet: Some((&unet, &u_store)),
        scheduler: sched,
        scale_factor: 1.0,
        latent_shape: [4, 8, 8, 8],
        geometry: OutputGeometry::bundle(),
        provenance: Provenance { producer: "ldm-trainer test".into(), ..Provenance::default() },
        dtype: DType::F32,
    };
    let dir = std::env::temp_dir().join(format!("ldm-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.ldm");
    export_blob(&path, &spec).unwrap();
    let blob = Blob::open(&path).unwrap();
    // The stores hold exactly the contract's tensors (nothing dropped silently on export).
    let mut want: Vec<(String, Vec<usize>)> =
        ldm_weights::expected_tensors(blob.config()).into_iter().map(|t| (t.name, t.shape)).collect();
    let mut have: Vec<(String, Vec<usize>)> =
        ae_store.entries.iter().chain(&u_store.entries).map(|e| (e.name.clone(), e.shape.clone())).collect();
    want.sort();
    have.sort();
    assert_eq!(have, want);
    assert_eq!(blob.config().unet.as_ref(), Some(&ucfg));
    assert_eq!(blob.config().encoder.as_ref(), Some(&enc));
    let opts = Options { threads: Some(2), ..Options::default() };
    let mut rt = Runtime::new(&blob, opts).unwrap();

    let ld = Dims::new(1, 4, 8, 8, 8);
    let x = Rng(3).vec(ld.numel(), 1.0);
    let mut eps_rt = vec![0.0f32; ld.numel()];
    rt.unet_forward(&x, 500, &mut eps_rt).unwrap();
    let eps_tr = unet.forward(&u_store.data, &x, ld, &[500.0], false).unwrap().eps;
    let e = rel_l2(&eps_rt, &eps_tr);
    println!("runtime vs trainer UNet forward: rel L2 {e:.2e}");
    assert!(e < 1e-5, "{e:e}");

    let mut img_rt = vec![0.0f32; 16 * 16 * 16];
    rt.decode(&x, &mut img_rt).unwrap();
    let (img_tr, _) = ae.decode(&ae_store.data, &x, ld).unwrap();
    let e = rel_l2(&img_rt, &img_tr);
    println!("runtime vs trainer decode: rel L2 {e:.2e}");
    assert!(e < 1e-5, "{e:e}");

    // The way back: a fresh store loaded from the blob equals the exported one.
    let mut back = ParamStore::new();
    let _ = DiffusionUnet::new(&mut back, &ucfg).unwrap();
    ldm_trainer::export::load_from_blob(&mut back, &blob).unwrap();
    assert_eq!(back.data, u_store.data);
    let mut ae_back = ParamStore::new();
    let _ = AutoencoderKL::new(&mut ae_back, &enc, &dec).unwrap();
    ldm_trainer::export::load_from_blob(&mut ae_back, &blob).unwrap();
    assert_eq!(ae_back.data, ae_store.data);
    // A store whose shapes differ from the blob is refused.
    let mut other = ParamStore::new();
    let _ = DiffusionUnet::new(&mut other, &UnetConfig { num_channels: vec![8, 8], ..ucfg.clone() }).unwrap();
    assert!(ldm_trainer::export::load_from_blob(&mut other, &blob).is_err());

    let shape = rt.output_shape();
    let mut out = vec![0.0f32; shape.iter().product()];
    rt.generate(11, &mut out, &mut |_| {}).unwrap();
    assert!(out.iter().all(|v| v.is_finite()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn export_refuses_incomplete_inputs() {
    let spec = ExportSpec {
        autoencoder: None,
        include_encoder: false,
        unet: None,
        scheduler: SchedulerConfig::bundle(),
        scale_factor: 1.0,
        latent_shape: [4, 8, 8, 8],
        geometry: OutputGeometry::bundle(),
        provenance: Provenance::default(),
        dtype: DType::F32,
    };
    assert!(ldm_trainer::export::collect(&spec).is_err());
}
