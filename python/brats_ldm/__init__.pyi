# Type stubs of brats_ldm (the Model class and functions are implemented in Rust: _native).
from os import PathLike
from typing import Any, Callable, Dict, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

_Path = Union[str, "PathLike[str]"]
_Progress = Callable[[int, int], Optional[bool]]

__version__: str

class BratsLdmError(Exception): ...
class ModelError(BratsLdmError): ...
class InvalidArgument(BratsLdmError, ValueError): ...
class DeviceError(BratsLdmError): ...
class MemoryLimitError(BratsLdmError): ...
class Cancelled(BratsLdmError): ...
class OutputError(BratsLdmError, OSError): ...
class CheckpointError(BratsLdmError): ...

class Model:
    """A loaded model blob and the runtime planned for it.

    ``path`` None: ``$BRATS_LDM_MODEL``, else the default model of the source tree the package
    was built from (``weights/default/brats-ldm-default.blob``; see ``default_model_path()``).
    ``device``: "cpu", "cuda" or "cuda:N" (CUDA needs a build with the ``cuda`` feature);
    ``precision``: "f32" ("f16"/"bf16" on CUDA only); ``threads``: CPU worker threads (None: all
    cores); ``max_memory``: bound in bytes on arena + workspaces (the CPU backend decodes in slabs
    to fit, otherwise ``MemoryLimitError``).

    The blob is read and validated and the runtime is planned and allocated here: ``plan`` gives
    its bytes. Sampling and decoding release the GIL. Calls on one Model from several threads
    are serialised; use one Model per thread to compute in parallel.
    """

    def __init__(
        self,
        path: Optional[_Path] = None,
        device: str = "cpu",
        precision: str = "f32",
        threads: Optional[int] = None,
        max_memory: Optional[int] = None,
    ) -> None: ...
    @property
    def path(self) -> str: ...
    @property
    def config(self) -> Dict[str, Any]:
        """Networks, scheduler, latent shape, output geometry and provenance of the blob."""
    @property
    def plan(self) -> Dict[str, int]:
        """Bytes by kind for the default settings: weights, arena, workspaces, state, total."""
    @property
    def threads(self) -> int: ...
    @property
    def latent_shape(self) -> Tuple[int, int, int, int]: ...
    @property
    def volume_shape(self) -> Tuple[int, int, int, int]: ...
    @property
    def steps(self) -> int:
        """Sampling steps of the model's default sampler."""
    @property
    def sampler(self) -> str:
        """The model's default sampler, "ddim", "ddpm" or "pndm"."""
    @property
    def checksum(self) -> str: ...
    @property
    def affine(self) -> npt.NDArray[np.float64]:
        """4x4 voxel-to-world RAS affine (mm) of a generated volume, as the CLI's NIfTI has it."""
    def generate(
        self,
        seed: int = 0,
        steps: Optional[int] = None,
        sampler: Optional[str] = None,
        eta: Optional[float] = None,
        init_noise: Optional[npt.NDArray[np.float32]] = None,
        progress: Optional[_Progress] = None,
    ) -> npt.NDArray[np.float32]:
        """Sample a latent and decode it: a float32 array [C, D, H, W].

        Bit-identical to ``brats-ldm generate --seed SEED`` with the same options. ``steps``,
        ``sampler`` ("ddim"/"ddpm"/"pndm") and ``eta`` (DDIM only; None means 0) default to the model's
        settings; DDPM runs every training timestep. ``init_noise``: the initial latent
        ([C, D, H, W] or [1, C, D, H, W], float32) instead of the seed's noise; a stochastic
        sampler still draws its step noise from ``seed``. ``progress(step, total)`` is called
        before each sampling step (step = steps done) and once with step == total before
        decoding; returning ``False`` raises ``Cancelled``. Ctrl-C raises ``KeyboardInterrupt``
        between steps.
        """
    def generate_to(
        self,
        path: _Path,
        seed: int = 0,
        steps: Optional[int] = None,
        sampler: Optional[str] = None,
        eta: Optional[float] = None,
        init_noise: Optional[npt.NDArray[np.float32]] = None,
        progress: Optional[_Progress] = None,
    ) -> npt.NDArray[np.float32]:
        """``generate`` and write the file the CLI writes (.nii.gz, .nii or .npy by the name),
        atomically; returns the volume."""
    def sample_latent(
        self,
        seed: int = 0,
        steps: Optional[int] = None,
        sampler: Optional[str] = None,
        eta: Optional[float] = None,
        init_noise: Optional[npt.NDArray[np.float32]] = None,
    ) -> npt.NDArray[np.float32]:
        """Only the sampler: the final latent [C, D, H, W]; ``decode`` of it equals ``generate``
        with the same arguments. Not interruptible while it runs."""
    def decode(self, latent: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Decode one latent ([C, D, H, W] or [1, C, D, H, W], float32) into a volume."""

def save_nifti(
    path: _Path,
    volume: npt.NDArray[np.float32],
    affine: Any,
    description: str = "",
) -> None:
    """Write a float32 volume ([C, D, H, W] or [D, H, W]) as NIfTI-1 (.nii or .nii.gz) with a
    4x4 affine (a rotation or reflection times voxel sizes, plus an offset), atomically; with
    ``Model.affine`` and the same description this is the file the CLI writes."""

def inspect(path: _Path, tensors: bool = False) -> Dict[str, Any]:
    """The report of ``brats-ldm inspect --json`` as a dict."""

def convert(
    out: _Path,
    *,
    autoencoder: Optional[_Path] = None,
    unet: Optional[_Path] = None,
    bundle: Optional[_Path] = None,
    config: Optional[_Path] = None,
    preset: Optional[str] = None,
    dtype: str = "f32",
    scale_factor: Optional[float] = None,
    latent_shape: Optional[Tuple[int, int, int, int]] = None,
    key: Optional[str] = None,
    attention_output_projection: bool = False,
    decoder_only: bool = False,
) -> Dict[str, Any]:
    """MONAI checkpoints (``.pt`` from torch.save, or ``.safetensors``; generative 0.2.x or
    monai >= 1.4 key names) -> one weight blob at ``out``, as ``brats-ldm convert`` writes it
    (same code, same bytes, same messages). The architecture comes from one of ``bundle`` (a
    MONAI bundle directory as it ships: its configs give the architecture, its ``models/`` the
    checkpoints unless ``autoencoder``/``unet`` are given), ``config`` (our JSON mirroring the
    bundle's sections, or a MONAI config file) or ``preset`` (``"bundle"``,
    ``"bundle-latent4"``). Returns ``path``, ``tensors``, ``bytes``, ``checksum`` (xxh3-64,
    hex), ``dtype`` and ``log`` (the lines the CLI prints). Raises :class:`CheckpointError` for
    a checkpoint or architecture that cannot be read or does not fit, :class:`InvalidArgument`
    for bad arguments (including ``out`` naming an input) and :class:`OutputError` when the blob
    cannot be written; nothing is left at ``out`` on error."""

def default_model_path() -> Optional[str]:
    """$BRATS_LDM_MODEL, else the source tree's default model when it exists, else None."""
