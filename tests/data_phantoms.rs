//! Brain phantoms: tissue statistics look like FLAIR (lesion/oedema bright, CSF dark, grey
//! brighter than white), one seed repeats exactly, two seeds differ, and a written Task01-shaped
//! dataset is discovered and preprocessed like BraTS.

use ldm_trainer::data::phantom::{make_flair, make_phantom, write_phantom_dataset, PhantomOptions, Tissue};
use ldm_trainer::data::{discover, preprocess_file, read_info, read_volume, PreprocessConfig};

fn small() -> PhantomOptions {
    PhantomOptions {
        dims: [96, 96, 64],
        spacing: 2.5,
        lesion: true,
    }
}

fn mean_of(p: &ldm_trainer::data::phantom::Phantom, t: Tissue) -> Option<f64> {
    let flair = &p.modalities[0].data;
    let v: Vec<f64> = p
        .tissue
        .iter()
        .zip(flair)
        .filter(|(x, _)| **x == t)
        .map(|(_, v)| *v as f64)
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

#[test]
fn tissue_statistics_look_like_flair() {
    for seed in [1u64, 2, 3] {
        let p = make_phantom(seed, &small()).unwrap();
        let n = p.tissue.len() as f64;
        let frac = |t: Tissue| p.tissue.iter().filter(|x| **x == t).count() as f64 / n;
        let brain = frac(Tissue::Grey) + frac(Tissue::White);
        assert!(brain > 0.08 && brain < 0.5, "seed {seed}: brain fraction {brain}");
        assert!(frac(Tissue::White) > 0.05 && frac(Tissue::Grey) > 0.03, "seed {seed}");
        assert!(
            frac(Tissue::Background) > 0.15,
            "seed {seed}: head fills the field of view"
        );
        for t in [Tissue::Scalp, Tissue::Skull, Tissue::Csf, Tissue::Ventricle] {
            assert!(frac(t) > 0.001, "seed {seed}: {t:?} fraction {}", frac(t));
        }
        let lesion = frac(Tissue::Core) + frac(Tissue::Rim) + frac(Tissue::Oedema);
        assert!(lesion > 0.0005 && lesion < 0.1, "seed {seed}: lesion fraction {lesion}");
        let m = |t| mean_of(&p, t).unwrap();
        let (wm, gm, csf) = (m(Tissue::White), m(Tissue::Grey), m(Tissue::Csf));
        assert!(gm > wm * 1.1, "seed {seed}: grey {gm} vs white {wm}");
        // the CSF rim is 2-4 mm thick, so at 2.5 mm partial volume lifts it; ventricles are big
        assert!(csf < wm * 0.8, "seed {seed}: CSF {csf} must be suppressed");
        assert!(m(Tissue::Ventricle) < wm * 0.5);
        assert!(m(Tissue::Oedema) > gm * 1.2, "seed {seed}: oedema must be FLAIR-bright");
        assert!(mean_of(&p, Tissue::Background).unwrap() < 30.0);
        // labels follow the tissue map
        for (t, l) in p.tissue.iter().zip(&p.labels) {
            let want = match t {
                Tissue::Oedema => 1,
                Tissue::Core => 2,
                Tissue::Rim => 3,
                _ => 0,
            };
            assert_eq!(*l, want);
        }
    }
}

#[test]
fn seeds_repeat_and_differ() {
    let a = make_flair(5, &small()).unwrap();
    let b = make_flair(5, &small()).unwrap();
    let c = make_flair(6, &small()).unwrap();
    assert_eq!(a, b);
    let diff = a.data.iter().zip(&c.data).filter(|(x, y)| x != y).count();
    assert!(diff > a.data.len() / 10, "{diff}");
    assert!(make_flair(
        0,
        &PhantomOptions {
            dims: [4, 4, 4],
            ..small()
        }
    )
    .is_err());
}

#[test]
fn written_dataset_is_task01_shaped() {
    let tmp = tempfile::tempdir().unwrap();
    let opt = PhantomOptions {
        dims: [64, 64, 48],
        spacing: 3.0,
        lesion: true,
    };
    let paths = write_phantom_dataset(tmp.path(), 2, 9, &opt, true, |_, _| {}).unwrap();
    assert_eq!(paths.len(), 2);
    let ds = discover(tmp.path(), false).unwrap();
    assert_eq!(ds.images, paths);
    let info = read_info(&paths[0]).unwrap();
    assert_eq!((info.dims, info.channels), ([64, 64, 48], 4));
    // channel 0 is the FLAIR of the same phantom
    let flair = read_volume(&paths[0], Some(0)).unwrap();
    let want = make_flair(ldm_trainer::data::phantom::case_seed(9, 0), &opt).unwrap();
    let worst = flair
        .data
        .iter()
        .zip(&want.data)
        .map(|(a, b)| (a - b.round()).abs())
        .fold(0.0f32, f32::max);
    assert_eq!(worst, 0.0);
    let labels = read_volume(&tmp.path().join("labelsTr/BRATS_001.nii.gz"), None).unwrap();
    assert!(labels.data.iter().any(|&v| v > 0.0));
    let p = preprocess_file(
        &paths[1],
        &PreprocessConfig {
            roi: [160, 160, 128],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(p.volume.dims, [160, 160, 128]);
    // round(63 * 3 / 1.1 + 1) = 173, round(47 * 3 / 1.1 + 1) = 129
    assert_eq!(p.resampled_dims, [173, 173, 129]);
    let s = p.volume.stats();
    assert!(s.min >= 0.0 && s.max > 1.0 && s.mean > 0.02, "{s:?}");
}

/// Timing at the BraTS size: `cargo test -p brats-ldm --test data_phantoms -- --ignored --nocapture`.
#[test]
#[ignore]
fn full_size_phantom_timing() {
    let t = std::time::Instant::now();
    let p = make_phantom(1, &PhantomOptions::default()).unwrap();
    println!(
        "240x240x155 phantom (4 contrasts + labels): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(p.modalities[0].dims, [240, 240, 155]);
}
