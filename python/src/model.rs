//! `brats_ldm.Model`: one loaded blob and the runtime built from it. Arguments are checked with
//! the GIL held (CLI rules, `settings`); loading, planning, sampling and decoding run with the
//! GIL released. The runtime lives behind a mutex, so calls on one `Model` from several threads
//! are serialised (each waits, without the GIL, for the one before); it is rebuilt only when a
//! call asks for another latent shape, sampler or step count than the previous call.

use crate::errors::{from_runtime, Failure, Kind, Result};
use crate::files::{self, Format};
use crate::{arrays, progress, settings};
use ldm_io::nifti::{affine as affine_from_code, VolumeHeader};
use ldm_runtime::arguments::{self, Spelling};
use ldm_runtime::{philox_normal, Device, Options, PlanReport, Precision, Runtime, Sampler};
use ldm_weights::Blob;
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// File name of the shipped default model and where it lives in the source tree.
const DEFAULT_MODEL_REL: &str = "weights/default/brats-ldm-default.blob";
/// Environment variable that points at a model blob when no path is given (as for the CLI).
const MODEL_ENV: &str = "BRATS_LDM_MODEL";

/// Where the default model is: `$BRATS_LDM_MODEL`, else the source tree this package was built
/// from (the repository's weights/default/), when that file still exists.
pub fn default_model_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(MODEL_ENV) {
        return Some(PathBuf::from(p));
    }
    let in_tree = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(DEFAULT_MODEL_REL);
    in_tree
        .is_file()
        .then(|| in_tree.canonicalize().unwrap_or(in_tree))
}

fn resolve_path(path: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = path {
        return Ok(p);
    }
    default_model_path().ok_or_else(|| {
        let looked = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(DEFAULT_MODEL_REL);
        Failure::new(
            Kind::Model,
            format!(
                "no path given and the default model {DEFAULT_MODEL_REL} was not found (looked in: {}); the default model is \
                 shipped in the source tree this package was built from; pass Model(path) (e.g. a blob made by `brats-ldm \
                 convert`) or set {MODEL_ENV}",
                looked.display()
            ),
        )
    })
}

/// What selects a runtime: everything else is fixed per `Model`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Key {
    latent: [usize; 4],
    steps: Option<usize>,
    sampler: Sampler,
}

#[derive(Default)]
struct State {
    key: Option<Key>,
    runtime: Option<Runtime>,
}

/// Where a volume's noise comes from.
enum Noise {
    /// Initial and step noise from this seed's Philox stream.
    Seed(u64),
    /// Given initial latent; a stochastic sampler draws its step noise from `seed`.
    Init { latent: Vec<f32>, seed: u64 },
}

/// One checked `generate`/`sample_latent` call.
struct Request {
    key: Key,
    noise: Noise,
}

/// A volume made by the runtime, with what describes it.
struct Made {
    data: Vec<f32>,
    shape: [usize; 4],
    steps: usize,
}

/// Model(path=None, device="cpu", precision="f32", threads=None, max_memory=None)
///
/// A model blob, read and validated, and the runtime planned and allocated for it. path None:
/// $BRATS_LDM_MODEL, else the default model of the source tree the package was built from.
/// Calls from several threads are serialised; the GIL is released while computing.
#[pyclass(module = "brats_ldm", name = "Model", frozen)]
pub struct Model {
    blob: Blob,
    path: PathBuf,
    device: Device,
    precision: Precision,
    threads: Option<usize>,
    max_memory: Option<usize>,
    checksum: String,
    default_key: Key,
    /// Of the default settings' runtime, taken when the model was loaded.
    plan: PlanReport,
    default_steps: usize,
    output_shape: [usize; 4],
    state: Mutex<State>,
}

impl Model {
    fn options(&self, key: Key) -> Options {
        Options {
            device: self.device,
            precision: self.precision,
            batch: 1,
            latent_shape: Some(key.latent),
            steps: key.steps,
            sampler: Some(key.sampler),
            threads: self.threads,
            max_memory: self.max_memory,
        }
    }

    fn prepare_error(&self, e: &ldm_runtime::RuntimeError) -> Failure {
        from_runtime(e).context(format!(
            "cannot prepare model {} to run",
            self.path.display()
        ))
    }

    /// Runs `f` on the runtime for `key` (built first when the last call used another), or, with
    /// `key` None, on whatever runtime is there when its latent shape is `latent`.
    fn with_runtime<R>(
        &self,
        key: Key,
        reuse_any_for_latent: bool,
        f: impl FnOnce(&mut Runtime) -> R,
    ) -> Result<R> {
        let mut state = self.state.lock().map_err(|_| {
            Failure::new(
                Kind::Other,
                "an earlier call on this Model failed inside the runtime; create a new Model",
            )
        })?;
        let reusable = match state.key {
            Some(k) if reuse_any_for_latent => k.latent == key.latent,
            Some(k) => k == key,
            None => false,
        };
        if !reusable {
            // Free the old plan before building the next: memory stays at one plan.
            state.runtime = None;
            state.key = None;
            let rt =
                Runtime::new(&self.blob, self.options(key)).map_err(|e| self.prepare_error(&e))?;
            state.runtime = Some(rt);
            state.key = Some(key);
        }
        match state.runtime.as_mut() {
            Some(rt) => Ok(f(rt)),
            None => Err(Failure::new(
                Kind::Other,
                "internal: no runtime after building one",
            )),
        }
    }

    /// Checks the arguments of `generate` and friends, as the CLI does, before any work.
    fn request(
        &self,
        seed: &Bound<'_, PyAny>,
        steps: Option<&Bound<'_, PyAny>>,
        sampler: Option<&str>,
        eta: Option<&Bound<'_, PyAny>>,
        init_noise: Option<&Bound<'_, PyAny>>,
    ) -> Result<Request> {
        let cfg = self.blob.config();
        let seed = settings::int_arg("seed", seed, 0)?;
        let steps = settings::opt_usize_arg("steps", steps, 1)?;
        let eta = settings::opt_f32_arg("eta", eta)?;
        let init = match init_noise {
            Some(v) if !v.is_none() => Some(arrays::latent("init_noise", v)?),
            _ => None,
        };
        let latent = match &init {
            Some((shape, _)) => {
                arguments::check_latent_shape(cfg, *shape)
                    .map_err(|e| Failure::from(e).context("init_noise does not fit the model"))?;
                *shape
            }
            None => self.default_key.latent,
        };
        let sampler = arguments::choose_sampler(cfg, sampler, eta, Spelling::Python)?;
        arguments::check_steps(cfg, sampler, steps, Spelling::Python)?;
        let noise = match init {
            Some((_, latent)) => Noise::Init { latent, seed },
            None => Noise::Seed(seed),
        };
        Ok(Request {
            key: Key {
                latent,
                steps,
                sampler,
            },
            noise,
        })
    }

    /// Samples and decodes one volume, without the GIL.
    fn make(&self, py: Python<'_>, req: &Request, callback: Option<&Py<PyAny>>) -> PyResult<Made> {
        let outcome = py.detach(|| {
            self.with_runtime(req.key, false, |rt| {
                let shape = rt.output_shape();
                let mut data = vec![0f32; shape.iter().product()];
                let steps = rt.timesteps().len();
                let run = progress::run(callback, steps, |report| match &req.noise {
                    Noise::Seed(seed) => rt.generate(*seed, &mut data, report),
                    Noise::Init { latent, seed } => {
                        rt.generate_from_noise_seeded(latent, *seed, &mut data, report)
                    }
                });
                run.map(|r| r.map(|()| Made { data, shape, steps }))
            })
        });
        match outcome {
            Err(f) => Err(f.into()),
            Ok(Err(stop)) => Err(stop.into()),
            Ok(Ok(Err(e))) => Err(from_runtime(&e).into()),
            Ok(Ok(Ok(made))) => Ok(made),
        }
    }

    /// The NIfTI description the CLI writes for this request.
    fn descrip(&self, req: &Request, steps: usize) -> String {
        let tag = match req.key.sampler {
            Sampler::Ddim { eta } if eta != 0.0 => format!("ddim{steps} eta={eta}"),
            Sampler::Ddim { .. } => format!("ddim{steps}"),
            Sampler::Ddpm => format!("ddpm{steps}"),
            Sampler::Pndm => format!("pndm{steps}"),
        };
        let id = match &req.noise {
            Noise::Seed(seed) => format!("seed={seed}"),
            Noise::Init { latent, seed } if req.key.sampler.is_stochastic() => {
                format!("init={:016x} seed={seed}", fnv1a(latent))
            }
            Noise::Init { latent, .. } => format!("init={:016x}", fnv1a(latent)),
        };
        format!(
            "{id} model={} {tag}",
            &self.checksum[..self.checksum.len().min(16)]
        )
    }
}

/// FNV-1a 64 of the initial latent's bytes: names an `init_noise` run in the NIfTI header.
fn fnv1a(data: &[f32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in data {
        for b in v.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// A float32 ndarray of `shape` owning `data`.
fn to_numpy<'py>(py: Python<'py>, data: Vec<f32>, shape: &[usize]) -> PyResult<Bound<'py, PyAny>> {
    Ok(PyArray1::from_vec(py, data)
        .reshape(shape.to_vec())?
        .into_any())
}

fn affine_4x4(py: Python<'_>, rows: [[f64; 4]; 3]) -> PyResult<Bound<'_, PyAny>> {
    let full = vec![
        rows[0].to_vec(),
        rows[1].to_vec(),
        rows[2].to_vec(),
        vec![0.0, 0.0, 0.0, 1.0],
    ];
    Ok(PyArray2::from_vec2(py, &full)
        .map_err(|e| Failure::new(Kind::Other, e.to_string()))?
        .into_any())
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (path=None, device="cpu", precision="f32", threads=None, max_memory=None))]
    fn new(
        py: Python<'_>,
        path: Option<PathBuf>,
        device: &str,
        precision: &str,
        threads: Option<&Bound<'_, PyAny>>,
        max_memory: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Model> {
        let device = arguments::parse_device(device, Spelling::Python).map_err(Failure::from)?;
        let precision =
            arguments::parse_precision(precision, Spelling::Python).map_err(Failure::from)?;
        let threads = settings::opt_usize_arg("threads", threads, 1)?;
        let max_memory = settings::opt_usize_arg("max_memory", max_memory, 1)?;
        let path = resolve_path(path)?;
        let blob = py.detach(|| Blob::open(&path)).map_err(|e| {
            Failure::new(
                Kind::Model,
                format!("cannot load model {}: {e}", path.display()),
            )
        })?;
        let cfg = blob.config();
        let latent = cfg.latent_shape.map(|n| n as usize);
        arguments::check_latent_shape(cfg, latent).map_err(Failure::from)?;
        let sampler =
            arguments::choose_sampler(cfg, None, None, Spelling::Python).map_err(Failure::from)?;
        let geometry = &cfg.geometry;
        affine_from_code(&geometry.orientation, geometry.spacing_mm, [1, 1, 1]).map_err(|e| {
            Failure::new(
                Kind::Model,
                format!(
                    "model {} has an unusable output geometry: {e}",
                    path.display()
                ),
            )
        })?;
        let checksum = format!("{:016x}", blob.checksum());
        let mut model = Model {
            blob,
            path,
            device,
            precision,
            threads,
            max_memory,
            checksum,
            default_key: Key {
                latent,
                steps: None,
                sampler,
            },
            plan: PlanReport::default(),
            default_steps: 0,
            output_shape: [0; 4],
            state: Mutex::new(State::default()),
        };
        let (plan, steps, shape) = py.detach(|| {
            model.with_runtime(model.default_key, false, |rt| {
                (rt.plan().clone(), rt.timesteps().len(), rt.output_shape())
            })
        })?;
        model.plan = plan;
        model.default_steps = steps;
        model.output_shape = shape;
        Ok(model)
    }

    /// The blob's path.
    #[getter]
    fn path(&self) -> String {
        self.path.display().to_string()
    }

    /// The model configuration (networks, scheduler, latent shape, geometry, provenance), as
    /// `brats-ldm inspect --json` prints it under "config".
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let text = serde_json::to_string(self.blob.config())
            .map_err(|e| Failure::new(Kind::Other, e.to_string()))?;
        py.import("json")?.call_method1("loads", (text,))
    }

    /// Bytes the runtime holds for the default settings, by kind, known before it computes:
    /// weights, arena (activations), workspaces (GEMM packing, normalisation, attention),
    /// state (sampler buffers) and their total.
    #[getter]
    fn plan<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let p = &self.plan;
        d.set_item("weights", p.weights_bytes)?;
        d.set_item("arena", p.arena_bytes)?;
        d.set_item("workspaces", p.workspace_bytes)?;
        d.set_item("state", p.state_bytes)?;
        d.set_item("total", p.total_bytes)?;
        Ok(d)
    }

    /// Worker threads of the CPU runtime (0 on CUDA).
    #[getter]
    fn threads(&self) -> usize {
        self.plan.threads
    }

    /// Default latent shape (C, D, H, W).
    #[getter]
    fn latent_shape(&self) -> (usize, usize, usize, usize) {
        let [c, d, h, w] = self.default_key.latent;
        (c, d, h, w)
    }

    /// Shape (C, D, H, W) of a generated volume.
    #[getter]
    fn volume_shape(&self) -> (usize, usize, usize, usize) {
        let [c, d, h, w] = self.output_shape;
        (c, d, h, w)
    }

    /// Sampling steps of the default sampler.
    #[getter]
    fn steps(&self) -> usize {
        self.default_steps
    }

    /// The default sampler: "ddim", "ddpm" or "pndm".
    #[getter]
    fn sampler(&self) -> &'static str {
        arguments::sampler_name(self.default_key.sampler)
    }

    /// XXH3-64 checksum of the blob, hexadecimal.
    #[getter]
    fn checksum(&self) -> String {
        self.checksum.clone()
    }

    /// 4x4 voxel-to-world (RAS, mm) affine of a generated volume: axis D is i, H is j, W is k,
    /// the centre voxel at world (0, 0, 0); the sform/qform the CLI writes.
    #[getter]
    fn affine<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let g = &self.blob.config().geometry;
        let [_, d, h, w] = self.output_shape;
        let rows = affine_from_code(&g.orientation, g.spacing_mm, [d, h, w])
            .map_err(|e| Failure::new(Kind::Model, e.to_string()))?;
        affine_4x4(py, rows)
    }

    /// Samples a latent and decodes it: a float32 array [C, D, H, W], bit-identical to
    /// `brats-ldm generate --seed SEED` with the same options. steps, sampler ("ddim"/"ddpm")
    /// and eta (DDIM only; None means 0) default to the model's; init_noise is a float32 latent
    /// [C, D, H, W] or [1, C, D, H, W] used instead of the seed's noise (stochastic samplers
    /// still draw step noise from seed); progress(step, total) is called before each step and
    /// with step == total before decoding, returning False raises Cancelled. Ctrl-C raises
    /// KeyboardInterrupt between steps. The GIL is released while computing.
    #[pyo3(signature = (seed=None, steps=None, sampler=None, eta=None, init_noise=None, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn generate<'py>(
        &self,
        py: Python<'py>,
        seed: Option<&Bound<'py, PyAny>>,
        steps: Option<&Bound<'py, PyAny>>,
        sampler: Option<&str>,
        eta: Option<&Bound<'py, PyAny>>,
        init_noise: Option<&Bound<'py, PyAny>>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let zero = 0u64.into_pyobject(py)?.into_any();
        let req = self.request(seed.unwrap_or(&zero), steps, sampler, eta, init_noise)?;
        let made = self.make(py, &req, progress.as_ref().filter(|p| !p.is_none(py)))?;
        to_numpy(py, made.data, &made.shape)
    }

    /// Like generate, then writes the file the CLI writes for the same options (.nii.gz, .nii
    /// or .npy by the name's ending, same bytes), atomically; returns the volume.
    #[pyo3(signature = (path, seed=None, steps=None, sampler=None, eta=None, init_noise=None, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn generate_to<'py>(
        &self,
        py: Python<'py>,
        path: PathBuf,
        seed: Option<&Bound<'py, PyAny>>,
        steps: Option<&Bound<'py, PyAny>>,
        sampler: Option<&str>,
        eta: Option<&Bound<'py, PyAny>>,
        init_noise: Option<&Bound<'py, PyAny>>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let format = Format::of_path(&path).ok_or_else(|| {
            Failure::invalid(format!(
                "cannot tell the format of {}: the name must end in .nii.gz, .nii or .npy",
                path.display()
            ))
        })?;
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(Failure::new(
                    Kind::Output,
                    format!(
                        "cannot write {}: directory {} does not exist",
                        path.display(),
                        dir.display()
                    ),
                )
                .into());
            }
        }
        let zero = 0u64.into_pyobject(py)?.into_any();
        let req = self.request(seed.unwrap_or(&zero), steps, sampler, eta, init_noise)?;
        let made = self.make(py, &req, progress.as_ref().filter(|p| !p.is_none(py)))?;
        let g = &self.blob.config().geometry;
        let volume = VolumeHeader {
            shape: made.shape,
            spacing_mm: g.spacing_mm,
            orientation: g.orientation.clone(),
            descrip: self.descrip(&req, made.steps),
        };
        let header = volume.image_header().map_err(|e| {
            Failure::new(
                Kind::Output,
                format!("cannot write {}: {e}", path.display()),
            )
        })?;
        py.detach(|| files::write(&path, format, &header, &made.data))
            .map_err(|e| Failure::new(Kind::Output, e))?;
        to_numpy(py, made.data, &made.shape)
    }

    /// Runs only the sampler and returns the final latent [C, D, H, W] (float32);
    /// decode(sample_latent(...)) equals generate(...) with the same arguments. Runs to the end
    /// once started (no progress, no Ctrl-C while it runs).
    #[pyo3(signature = (seed=None, steps=None, sampler=None, eta=None, init_noise=None))]
    fn sample_latent<'py>(
        &self,
        py: Python<'py>,
        seed: Option<&Bound<'py, PyAny>>,
        steps: Option<&Bound<'py, PyAny>>,
        sampler: Option<&str>,
        eta: Option<&Bound<'py, PyAny>>,
        init_noise: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let zero = 0u64.into_pyobject(py)?.into_any();
        let req = self.request(seed.unwrap_or(&zero), steps, sampler, eta, init_noise)?;
        let shape = req.key.latent;
        let outcome = py.detach(|| {
            let n: usize = shape.iter().product();
            let (noise, seed) = match &req.noise {
                Noise::Seed(seed) => {
                    let mut noise = vec![0f32; n];
                    philox_normal(*seed, 0, &mut noise);
                    (noise, *seed)
                }
                Noise::Init { latent, seed } => (latent.clone(), *seed),
            };
            let mut out = vec![0f32; n];
            self.with_runtime(req.key, false, |rt| {
                rt.sample_latent(&noise, seed, None, &mut out)
            })
            .and_then(|r| r.map_err(|e| from_runtime(&e)))
            .map(|()| out)
        })?;
        to_numpy(py, outcome, &shape)
    }

    /// Decodes one float32 latent ([C, D, H, W] or [1, C, D, H, W]) into a volume [C, D, H, W].
    #[pyo3(signature = (latent,))]
    fn decode<'py>(
        &self,
        py: Python<'py>,
        latent: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (shape, data) = arrays::latent("latent", latent)?;
        arguments::check_latent_shape(self.blob.config(), shape)
            .map_err(|e| Failure::from(e).context("latent does not fit the model"))?;
        let key = Key {
            latent: shape,
            ..self.default_key
        };
        let made = py.detach(|| {
            self.with_runtime(key, true, |rt| {
                let out_shape = rt.output_shape();
                let mut out = vec![0f32; out_shape.iter().product()];
                rt.decode(&data, &mut out)
                    .map(|()| (out, out_shape))
                    .map_err(|e| from_runtime(&e))
            })
            .and_then(|r| r)
        })?;
        to_numpy(py, made.0, &made.1)
    }

    fn __repr__(&self) -> String {
        let [c, d, h, w] = self.output_shape;
        format!(
            "brats_ldm.Model('{}', device='{}', volume {c}x{d}x{h}x{w}, {} {} steps, checksum {})",
            self.path.display(),
            arguments::device_name(self.device),
            self.sampler(),
            self.default_steps,
            self.checksum
        )
    }
}
