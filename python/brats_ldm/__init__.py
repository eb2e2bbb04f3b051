"""brats_ldm: synthetic FLAIR brain MRI from a 3-D latent diffusion model, without PyTorch.

The brats-ldm runtime (Rust) as a Python package: load a weight blob, generate volumes as
float32 NumPy arrays bit-identical to the ``brats-ldm generate`` command line for the same seed
and options, with every buffer planned (and its size known) before anything runs.

    import brats_ldm
    model = brats_ldm.Model()              # the default model; or Model("bundle.blob")
    volume = model.generate(seed=0)        # float32 array [C, D, H, W]
    brats_ldm.save_nifti("seed-0.nii.gz", volume, model.affine)

Errors raise subclasses of :class:`BratsLdmError` with the command line's messages.
"""

import json as _json
from os import PathLike as _PathLike
from typing import Any as _Any, Dict as _Dict, Union as _Union


class BratsLdmError(Exception):
    """Base class of every error raised by brats_ldm."""


class ModelError(BratsLdmError):
    """The model blob cannot be read, is invalid, or lacks what the call needs."""


class InvalidArgument(BratsLdmError, ValueError):
    """An argument has a bad value (seed, steps, sampler, eta, shapes, dtypes, paths)."""


class DeviceError(BratsLdmError):
    """The device or precision is not available in this build or on this machine."""


class MemoryLimitError(BratsLdmError):
    """The memory plan needs more than ``max_memory`` bytes."""


class Cancelled(BratsLdmError):
    """The progress callback returned ``False``."""


class OutputError(BratsLdmError, OSError):
    """A file could not be written (nothing is left under its name)."""


class CheckpointError(BratsLdmError):
    """A checkpoint or architecture given to :func:`convert` cannot be read or does not fit."""


from ._native import Model, save_nifti, convert, default_model_path, __version__  # noqa: E402
from ._native import inspect_json as _inspect_json  # noqa: E402


def inspect(path: _Union[str, "_PathLike[str]"], tensors: bool = False) -> _Dict[str, _Any]:
    """Describe a model blob: the report ``brats-ldm inspect --json`` prints, as a dict.

    Keys: path, format_version, file_bytes, header_bytes, tensor_bytes, checksum, tensor_count,
    dtypes, networks, parameters_total, unused_proj_attn_parameters, config, and with
    ``tensors=True`` a list of every tensor (name, dtype, shape, offset, bytes). The blob is
    fully validated (checksum, config, tensor table); an invalid one raises :class:`ModelError`.
    """
    return _json.loads(_inspect_json(path, tensors))


__all__ = [
    "Model",
    "save_nifti",
    "inspect",
    "convert",
    "default_model_path",
    "BratsLdmError",
    "ModelError",
    "InvalidArgument",
    "DeviceError",
    "MemoryLimitError",
    "Cancelled",
    "OutputError",
    "CheckpointError",
    "__version__",
]
