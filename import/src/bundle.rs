//! A MONAI bundle as it ships (a directory with `configs/inference.json`, the training configs
//! and `models/*.pt`), or one MONAI config file, turned into what a conversion needs: the
//! architecture (networks, scheduler, latent shape, scale factor, default number of steps) and
//! where the checkpoints are. The config files are resolved by `bundle_config`; this module picks
//! the sections generation uses, leaves out the flags that do not change the numbers, and says in
//! its notes where each value came from and what it ignored.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use thiserror::Error;

use crate::arch::{ArchError, Architecture};
use crate::bundle_config::{is_disabled, normalize_id, read_json, BundleConfig, ConfigError};
use crate::bundle_expr::{self, EvalError, Expr};

#[derive(Debug, Error)]
pub enum BundleError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Architecture(#[from] ArchError),
    #[error("bundle {dir}: {msg}")]
    Layout { dir: String, msg: String },
}

/// A checkpoint the bundle names (or the model zoo's default name where its config does not).
#[derive(Debug, Clone, PartialEq)]
pub struct BundleCheckpoint {
    pub path: PathBuf,
    /// Where the name came from: a config key, or "the default name".
    pub named_by: String,
}

/// What a bundle (or one MONAI config file) says about a conversion.
#[derive(Debug, Clone)]
pub struct BundleSource {
    pub architecture: Architecture,
    /// The config files read, in merge order.
    pub configs: Vec<PathBuf>,
    /// Only for a bundle directory.
    pub autoencoder: Option<BundleCheckpoint>,
    pub unet: Option<BundleCheckpoint>,
    /// Where values came from and what was ignored, one line each.
    pub notes: Vec<String>,
}

/// Keys that choose how a network computes (memory, kernels), not what.
const SPEED_FLAGS: [&str; 3] = ["use_flash_attention", "use_checkpointing", "use_checkpoint"];
/// Keys of a MONAI component that are not constructor arguments.
const COMPONENT_KEYS: [&str; 4] = ["_requires_", "_desc_", "_disabled_", "_mode_"];

/// Keys of the converter's own architecture files.
const OWN_KEYS: [&str; 9] = [
    "autoencoder_def",
    "autoencoder",
    "network_def",
    "unet",
    "diffusion_def",
    "noise_scheduler",
    "scheduler",
    "latent_shape",
    "scale_factor",
];

/// Whether a parsed config file is a MONAI bundle config rather than the converter's own
/// architecture file: it has other top-level keys, or `@` / `$` / `%` values anywhere.
pub fn is_monai_config(v: &Value) -> bool {
    fn special(v: &Value) -> bool {
        match v {
            Value::String(s) => s.starts_with(['@', '$', '%']),
            Value::Array(a) => a.iter().any(special),
            Value::Object(o) => o.values().any(special),
            _ => false,
        }
    }
    match v {
        Value::Object(o) => o.keys().any(|k| !OWN_KEYS.contains(&k.as_str())) || special(v),
        _ => false,
    }
}

/// The architecture from one config file: the converter's own format, or a MONAI bundle config
/// (resolved as MONAI does). `scale_factor_given`: the caller sets the scale factor itself.
pub fn read_config_file(
    path: &Path,
    scale_factor_given: bool,
) -> Result<BundleSource, BundleError> {
    let monai = is_monai_config(&read_json(path)?);
    if !monai {
        return Ok(BundleSource {
            architecture: Architecture::from_file(path)?,
            configs: vec![path.to_path_buf()],
            autoencoder: None,
            unet: None,
            notes: Vec::new(),
        });
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let base = if base.file_name().is_some_and(|n| n == "configs") {
        base.parent().unwrap_or(base)
    } else {
        base
    };
    let configs = vec![path.to_path_buf()];
    let mut cfg = BundleConfig::load(&configs, base)?;
    let mut notes = Vec::new();
    let architecture = architecture(&mut cfg, scale_factor_given, &mut notes)?;
    Ok(BundleSource {
        architecture,
        configs,
        autoencoder: None,
        unet: None,
        notes,
    })
}

/// The config files of a bundle directory in merge order: the training configs (autoencoder
/// first; not the multi-GPU overlays), then `inference.json`, whose keys win.
fn bundle_configs(dir: &Path) -> Result<Vec<PathBuf>, BundleError> {
    let layout = |msg: String| BundleError::Layout {
        dir: dir.display().to_string(),
        msg,
    };
    let configs = dir.join("configs");
    let entries = std::fs::read_dir(&configs)
        .map_err(|e| layout(format!("cannot list {}: {e}", configs.display())))?;
    let mut train = Vec::new();
    let mut inference = None;
    for e in entries {
        let e = e.map_err(|e| layout(format!("cannot list {}: {e}", configs.display())))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "inference.json" {
            inference = Some(e.path());
        } else if name == "inference.yaml" || name == "inference.yml" {
            return Err(layout(format!(
                "configs/{name}: YAML configs are not read; save it as JSON (same content)"
            )));
        } else if name.starts_with("train") && name.ends_with(".json") {
            train.push(name);
        }
    }
    train.sort_by_key(|n| (!n.contains("autoencoder"), n.clone()));
    let mut files: Vec<PathBuf> = train.iter().map(|n| configs.join(n)).collect();
    match inference {
        Some(p) => files.push(p),
        None if files.is_empty() => {
            return Err(layout(format!(
                "{} has neither inference.json nor train*.json",
                configs.display()
            )))
        }
        None => {}
    }
    Ok(files)
}

/// Everything a conversion needs from a bundle directory.
pub fn read_bundle_dir(dir: &Path, scale_factor_given: bool) -> Result<BundleSource, BundleError> {
    if !dir.is_dir() {
        return Err(BundleError::Layout {
            dir: dir.display().to_string(),
            msg: "is not a directory".into(),
        });
    }
    let configs = bundle_configs(dir)?;
    let mut cfg = BundleConfig::load(&configs, dir)?;
    let mut notes = vec![format!(
        "bundle {}: configs {} (later files win)",
        dir.display(),
        configs
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(", ")
    )];
    // MONAI runs a bundle with `bundle_root` set to its directory; absolute, so that paths the
    // config builds from it do not depend on the working directory.
    let root = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    cfg.set_top("bundle_root", Value::String(root.display().to_string()));
    let architecture = architecture(&mut cfg, scale_factor_given, &mut notes)?;
    let autoencoder = checkpoint(
        &mut cfg,
        dir,
        "load_autoencoder_path",
        "models/model_autoencoder.pt",
        &mut notes,
    );
    let unet = checkpoint(
        &mut cfg,
        dir,
        "load_diffusion_path",
        "models/model.pt",
        &mut notes,
    );
    Ok(BundleSource {
        architecture,
        configs,
        autoencoder: Some(autoencoder),
        unet: Some(unet),
        notes,
    })
}

/// The checkpoint path the config's `key` evaluates to, else the model zoo's default name.
fn checkpoint(
    cfg: &mut BundleConfig,
    dir: &Path,
    key: &str,
    default: &str,
    notes: &mut Vec<String>,
) -> BundleCheckpoint {
    if cfg.raw(key).is_some() {
        match cfg.resolve(key) {
            Ok(Value::String(p)) => {
                let p = PathBuf::from(p);
                let path = if p.is_absolute() { p } else { dir.join(p) };
                return BundleCheckpoint {
                    path,
                    named_by: format!("`{key}` in {}", cfg.file_of(key)),
                };
            }
            Ok(other) => notes.push(format!("`{key}` is not a path ({other}); using {default}")),
            Err(e) => notes.push(format!("{e}; using {default}")),
        }
    }
    BundleCheckpoint {
        path: dir.join(default),
        named_by: "the model zoo's default name".into(),
    }
}

fn item(cfg: &BundleConfig, id: &str, msg: impl Into<String>) -> BundleError {
    BundleError::Config(ConfigError::Item {
        file: cfg.file_of(id),
        id: id.to_string(),
        msg: msg.into(),
    })
}

/// The class name of a component's `_target_` (`a.b.AutoencoderKL` -> `AutoencoderKL`).
fn class_of(v: &Value) -> Option<&str> {
    let t = v.get("_target_")?.as_str()?;
    Some(t.rsplit(['.', ':']).next().unwrap_or(t))
}

/// One network or scheduler section with its arguments resolved; `None` when the config has
/// no such key.
fn section(
    cfg: &mut BundleConfig,
    name: &str,
    class: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<Option<Value>, BundleError> {
    let Some(raw) = cfg.raw(name).cloned() else {
        return Ok(None);
    };
    let raw = match raw {
        Value::Object(o) => o,
        _ => match cfg.resolve(name)? {
            Value::Object(o) => o,
            other => {
                return Err(item(
                    cfg,
                    name,
                    format!("expected a component (a dict with `_target_`), got {other}"),
                ))
            }
        },
    };
    if is_disabled(&Value::Object(raw.clone())) {
        return Err(item(
            cfg,
            name,
            "is disabled (`_disabled_`): there is no network to convert",
        ));
    }
    if let Some(mode) = raw.get("_mode_") {
        if mode.as_str() != Some("default") {
            return Err(item(
                cfg,
                name,
                format!("`_mode_` {mode} is not supported (only \"default\" builds the network)"),
            ));
        }
    }
    let target = match raw.get("_target_") {
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => Some(match cfg.resolve(&format!("{name}#_target_"))? {
            Value::String(t) => t,
            other => {
                return Err(item(
                    cfg,
                    name,
                    format!("`_target_` {other} is not a class name"),
                ))
            }
        }),
        None => None,
    };
    if let (Some(want), Some(t)) = (class, &target) {
        let got = class_of(&serde_json::json!({ "_target_": t }))
            .unwrap_or_default()
            .to_string();
        if got != want {
            return Err(item(
                cfg,
                name,
                format!("`_target_` `{t}` is not supported: the converter builds {want} (generative 0.2.3 or monai >= 1.4)"),
            ));
        }
    }
    let mut out = Map::new();
    for (k, _) in raw {
        if COMPONENT_KEYS.contains(&k.as_str()) {
            continue;
        }
        let id = format!("{name}#{k}");
        if SPEED_FLAGS.contains(&k.as_str()) {
            notes.push(format!("ignored `{id}`: it does not change the numbers"));
            continue;
        }
        if k == "_target_" {
            if let Some(t) = &target {
                out.insert(k, Value::String(t.clone()));
            }
            continue;
        }
        out.insert(k, cfg.resolve(&id)?);
    }
    Ok(Some(Value::Object(out)))
}

/// The `set_timesteps(...)` calls on `scheduler` anywhere in `e`.
fn set_timesteps_calls<'a>(e: &'a Expr, scheduler: &str, out: &mut Vec<&'a Expr>) {
    match e {
        Expr::Call { func, args, kwargs } => {
            if let Expr::Attr(obj, m) = func.as_ref() {
                if m == "set_timesteps" && matches!(obj.as_ref(), Expr::Ref(r) if *r == scheduler) {
                    out.push(e);
                }
                set_timesteps_calls(obj, scheduler, out);
            }
            args.iter()
                .for_each(|a| set_timesteps_calls(a, scheduler, out));
            kwargs
                .iter()
                .for_each(|(_, a)| set_timesteps_calls(a, scheduler, out));
        }
        Expr::List(items) => items
            .iter()
            .for_each(|a| set_timesteps_calls(a, scheduler, out)),
        Expr::Neg(x) | Expr::Attr(x, _) => set_timesteps_calls(x, scheduler, out),
        Expr::Binary(_, a, b) | Expr::Index(a, b) => {
            set_timesteps_calls(a, scheduler, out);
            set_timesteps_calls(b, scheduler, out);
        }
        Expr::Lit(_) | Expr::Ref(_) | Expr::Name(_) => {}
    }
}

fn positive_int(cfg: &BundleConfig, id: &str, v: &Value, what: &str) -> Result<u32, BundleError> {
    v.as_u64()
        .filter(|&n| n > 0)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            item(
                cfg,
                id,
                format!("{what} must be a positive integer, got {v}"),
            )
        })
}

/// The number of inference steps the config asks for: the argument of
/// `@<scheduler>.set_timesteps(...)` (calls in the scheduler's own file first), else a
/// top-level `num_inference_steps`.
fn inference_steps(
    cfg: &mut BundleConfig,
    scheduler: &str,
) -> Result<Option<(u32, String)>, BundleError> {
    let mut found: Option<(u32, String)> = None;
    // Merged training configs may set up their own schedule: the calls in the file the
    // scheduler comes from win.
    let calling = cfg.strings_where(|s| s.starts_with('$') && s.contains("set_timesteps"))?;
    let home = cfg.file_of(scheduler);
    let (same, other): (Vec<_>, Vec<_>) = calling
        .into_iter()
        .partition(|(id, _)| cfg.file_of(id) == home);
    let candidates = if same.is_empty() { other } else { same };
    for (id, s) in candidates {
        let src = &s[1..];
        let Ok(expr) = bundle_expr::parse(&normalize_id(src)) else {
            continue;
        };
        let mut calls = Vec::new();
        set_timesteps_calls(&expr, scheduler, &mut calls);
        for call in calls {
            let Expr::Call { args, kwargs, .. } = call else {
                continue;
            };
            let mut steps_arg = args.first();
            for (k, a) in kwargs {
                match k.as_str() {
                    "num_inference_steps" => steps_arg = Some(a),
                    "device" => {}
                    other => {
                        return Err(item(
                            cfg,
                            &id,
                            format!("`set_timesteps` argument `{other}` is not supported"),
                        ))
                    }
                }
            }
            if args.len() > 1 {
                return Err(item(
                    cfg,
                    &id,
                    "`set_timesteps` with more than one positional argument is not supported",
                ));
            }
            let Some(arg) = steps_arg else {
                return Err(item(cfg, &id, "`set_timesteps` without a number of steps"));
            };
            let mut err = None;
            let v = bundle_expr::eval(arg, &mut |r: &str| {
                cfg.resolve(r).map_err(|e| err = Some(e))
            });
            let v = match v {
                Ok(v) => v,
                Err(EvalError::Ref(())) => {
                    return Err(err
                        .map(BundleError::Config)
                        .unwrap_or_else(|| item(cfg, &id, "a reference failed")))
                }
                Err(EvalError::Cannot(what)) => {
                    return Err(item(
                        cfg,
                        &id,
                        format!(
                            "the number of steps in `{s}` cannot be evaluated here: it uses {what}"
                        ),
                    ))
                }
            };
            let n = positive_int(cfg, &id, &v, "num_inference_steps")?;
            match &found {
                Some((m, other)) if *m != n => {
                    return Err(item(
                        cfg,
                        &id,
                        format!("sets {n} inference steps but `{other}` sets {m}"),
                    ))
                }
                _ => found = Some((n, id.clone())),
            }
        }
    }
    if found.is_none() && cfg.raw("num_inference_steps").is_some() {
        let v = cfg.resolve("num_inference_steps")?;
        let n = positive_int(cfg, "num_inference_steps", &v, "num_inference_steps")?;
        found = Some((n, "num_inference_steps".into()));
    }
    Ok(found)
}

/// The scale factor generation divides latents by before decoding, as the config's inferer
/// does it; `None` when the config does not say (the converter's default then applies).
fn scale_factor(
    cfg: &mut BundleConfig,
    notes: &mut Vec<String>,
) -> Result<Option<f32>, BundleError> {
    let inferer = cfg.raw("inferer").cloned();
    let class = inferer.as_ref().and_then(class_of).map(str::to_string);
    let key = match class.as_deref() {
        Some("LDMSampler") => {
            notes.push("the bundle's LDMSampler decodes without dividing by a scale factor: scale factor 1".into());
            return Ok(Some(1.0));
        }
        Some("LatentDiffusionInferer") => {
            if cfg.raw("inferer#scale_factor").is_none() {
                notes.push("LatentDiffusionInferer without scale_factor: MONAI's default 1".into());
                return Ok(Some(1.0));
            }
            "inferer#scale_factor"
        }
        Some(other) => {
            notes.push(format!(
                "inferer `{other}` is not known to the converter: the scale factor is the config's `scale_factor` if it has one, else 1"
            ));
            "scale_factor"
        }
        None => "scale_factor",
    };
    if cfg.raw(key).is_none() {
        return Ok(None);
    }
    let v = cfg.resolve(key).map_err(|e| match e {
        ConfigError::Item { file, id, msg } => BundleError::Config(ConfigError::Item {
            file,
            id,
            msg: format!("{msg} (give the scale factor with --scale-factor)"),
        }),
        other => BundleError::Config(other),
    })?;
    match v.as_f64() {
        Some(s) if s.is_finite() && s > 0.0 => Ok(Some(s as f32)),
        _ => Err(item(
            cfg,
            key,
            format!("scale factor {v} is not a positive number"),
        )),
    }
}

/// The architecture a resolved MONAI config describes.
fn architecture(
    cfg: &mut BundleConfig,
    scale_factor_given: bool,
    notes: &mut Vec<String>,
) -> Result<Architecture, BundleError> {
    let mut sections = Map::new();
    if let Some(v) = section(cfg, "autoencoder_def", Some("AutoencoderKL"), notes)? {
        sections.insert("autoencoder_def".into(), v);
    }
    if let Some(v) = section(cfg, "network_def", Some("DiffusionModelUNet"), notes)? {
        sections.insert("network_def".into(), v);
    }
    let scheduler_key = ["noise_scheduler", "scheduler"]
        .into_iter()
        .find(|k| cfg.raw(k).is_some_and(|v| v.is_object()));
    if let Some(k) = scheduler_key {
        if let Some(v) = section(cfg, k, None, notes)? {
            notes.push(format!("noise scheduler `{k}` from {}", cfg.file_of(k)));
            sections.insert("noise_scheduler".into(), v);
        }
    } else {
        notes.push("the config has no noise_scheduler: the bundle's DDIM schedule is used".into());
    }
    if cfg.raw("latent_shape").is_some() {
        sections.insert("latent_shape".into(), cfg.resolve("latent_shape")?);
    }
    if !scale_factor_given {
        if let Some(s) = scale_factor(cfg, notes)? {
            sections.insert("scale_factor".into(), Value::from(s));
        }
    }
    let steps = match scheduler_key {
        Some(k) => inference_steps(cfg, k)?,
        None => None,
    };
    let mut files: Vec<String> = ["autoencoder_def", "network_def", "latent_shape"]
        .iter()
        .chain(scheduler_key.iter())
        .filter(|k| cfg.raw(k).is_some())
        .map(|k| cfg.file_of(k))
        .collect();
    files.sort();
    files.dedup();
    let mut arch = Architecture::from_value(Value::Object(sections), &files.join(", "))?;
    if let Some((n, id)) = steps {
        if n > arch.scheduler.num_train_timesteps {
            return Err(item(
                cfg,
                &id,
                format!(
                    "{n} inference steps are more than the scheduler's {} training timesteps",
                    arch.scheduler.num_train_timesteps
                ),
            ));
        }
        notes.push(format!(
            "{n} inference steps from `{id}` in {}",
            cfg.file_of(&id)
        ));
        arch.scheduler.default_steps = n;
    }
    Ok(arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/bundle")
            .join(rel)
    }

    /// Everything but the scheduler's fields, which its own tests hold.
    fn same_networks(a: &Architecture, b: &Architecture) {
        assert_eq!(a.decoder, b.decoder);
        assert_eq!(a.encoder, b.encoder);
        assert_eq!(a.unet, b.unet);
        assert_eq!(a.latent_shape, b.latent_shape);
        assert_eq!(a.scale_factor, b.scale_factor);
        assert_eq!(a.scheduler.default_steps, b.scheduler.default_steps);
        assert_eq!(
            a.scheduler.num_train_timesteps,
            b.scheduler.num_train_timesteps
        );
    }

    #[test]
    fn both_releases_resolve_to_their_presets() {
        let four = read_config_file(&fixture("current/configs/inference.json"), false).unwrap();
        same_networks(&four.architecture, &Architecture::bundle_latent4());
        let notes = four.notes.join("\n");
        assert!(
            notes.contains("ignored `network_def#use_flash_attention`"),
            "{notes}"
        );
        assert!(
            notes.contains("ignored `autoencoder_def#use_checkpointing`"),
            "{notes}"
        );
        assert!(
            notes.contains("50 inference steps from `set_timesteps`"),
            "{notes}"
        );
        let eight =
            read_config_file(&fixture("release-1.1/configs/inference.json"), false).unwrap();
        same_networks(&eight.architecture, &Architecture::bundle());
    }

    #[test]
    fn the_latent4_preset_is_a_valid_model_config() {
        let opts = crate::convert::ConvertOptions {
            autoencoder: Some("a.pt".into()),
            unet: Some("u.pt".into()),
            ..Default::default()
        };
        let cfg = crate::convert::model_config(&opts, &Architecture::bundle_latent4()).unwrap();
        assert_eq!(cfg.latent_shape, [4, 48, 48, 32]);
        assert_eq!(cfg.unet.unwrap().num_head_channels, vec![0, 32, 32]);
    }

    #[test]
    fn the_converters_own_format_still_reads_strictly() {
        let own =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/configs/bundle.json");
        let s = read_config_file(&own, false).unwrap();
        assert_eq!(s.architecture, Architecture::bundle());
        assert!(s.notes.is_empty());
    }

    #[test]
    fn the_tiny_bundle_directory_names_its_checkpoints_and_steps() {
        let dir = fixture("tiny");
        let s = read_bundle_dir(&dir, false).unwrap();
        let a = &s.architecture;
        assert_eq!(a.latent_shape, Some([4, 8, 8, 4]));
        assert_eq!(a.scheduler.default_steps, 20);
        let u = a.unet.as_ref().unwrap();
        assert_eq!(
            (u.num_channels.clone(), u.num_head_channels.clone()),
            (vec![16, 16, 16], vec![0, 16, 16])
        );
        assert_eq!(u.norm_num_groups, 8);
        assert_eq!(a.decoder.as_ref().unwrap().latent_channels, 4);
        assert_eq!(
            s.autoencoder.unwrap().path,
            dir.canonicalize()
                .unwrap()
                .join("models/model_autoencoder.pt")
        );
        assert!(s.unet.unwrap().named_by.contains("load_diffusion_path"));
        assert_eq!(s.configs.len(), 3);
    }
}
