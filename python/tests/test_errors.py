"""Every error path raises a BratsLdmError subclass, with the CLI's message where the CLI has the
same check (CLI flags `--name` read `name` in Python), before any work and without output files."""

import os

import numpy as np
import pytest

import brats_ldm
from brats_ldm import Cancelled, DeviceError, InvalidArgument, MemoryLimitError, ModelError, OutputError
from conftest import cli_error


def test_hierarchy():
    for cls in (ModelError, InvalidArgument, DeviceError, MemoryLimitError, Cancelled, OutputError):
        assert issubclass(cls, brats_ldm.BratsLdmError)
    assert issubclass(InvalidArgument, ValueError) and issubclass(OutputError, OSError)


def corrupt_copies(blob, tmp_path):
    data = blob.read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x40
    files = {
        "missing": None,
        "empty": b"",
        "truncated": data[: len(data) // 3],
        "flipped": bytes(flipped),
        "not-a-blob": b"\x89PNG\r\n\x1a\n" + bytes(200),
    }
    out = {}
    for name, content in files.items():
        path = tmp_path / f"{name}.blob"
        if content is not None:
            path.write_bytes(content)
        out[name] = path
    return out


def test_bad_model_files_carry_the_cli_messages(cli, blob, tmp_path):
    for name, path in corrupt_copies(blob, tmp_path).items():
        with pytest.raises(ModelError) as e:
            brats_ldm.Model(path)
        expected = cli_error(cli, "generate", "--model", path, "--out", tmp_path / "out")
        assert str(e.value) == expected, name
        with pytest.raises(ModelError) as e:
            brats_ldm.inspect(path)
        assert str(e.value) == cli_error(cli, "inspect", path), name


def test_a_directory_is_not_a_model(tmp_path):
    with pytest.raises(ModelError, match="cannot load model"):
        brats_ldm.Model(tmp_path)


def test_missing_cuda_backend_is_a_device_error_with_the_cli_message(cli, blob, tmp_path):
    with pytest.raises(DeviceError) as e:
        brats_ldm.Model(blob, device="cuda")
    assert str(e.value) == cli_error(cli, "generate", "--model", blob, "--out", tmp_path, "--device", "cuda")


@pytest.mark.parametrize(
    "kwargs,flags",
    [
        (dict(device="tpu"), ["--device", "tpu"]),
        (dict(device="cuda:x"), ["--device", "cuda:x"]),
        (dict(precision="f64"), ["--precision", "f64"]),
        (dict(precision="f16"), ["--precision", "f16"]),
        (dict(threads=0), ["--threads", "0"]),
    ],
)
def test_bad_model_options_carry_the_cli_messages(cli, blob, tmp_path, kwargs, flags):
    with pytest.raises(brats_ldm.BratsLdmError) as e:
        brats_ldm.Model(blob, **kwargs)
    expected = cli_error(cli, "generate", "--model", blob, "--out", tmp_path, *flags)
    assert str(e.value) == expected.replace("--", "")


@pytest.mark.parametrize(
    "kwargs,flags",
    [
        (dict(sampler="euler"), ["--sampler", "euler"]),
        (dict(steps=0), ["--steps", "0"]),
        (dict(sampler="pndm", steps=3), ["--sampler", "pndm", "--steps", "3"]),
        (dict(sampler="ddpm", steps=1001), ["--sampler", "ddpm", "--steps", "1001"]),
        (dict(eta=0.5), ["--eta", "0.5"]),
        (dict(sampler="ddim", eta=-1.0), ["--sampler", "ddim", "--eta=-1"]),
        (dict(sampler="ddim", eta=float("nan")), ["--sampler", "ddim", "--eta", "NaN"]),
        (dict(sampler="ddim", steps=1001), ["--sampler", "ddim", "--steps", "1001"]),
    ],
)
def test_bad_generate_options_carry_the_cli_messages(cli, blob, model, tmp_path, kwargs, flags):
    with pytest.raises(InvalidArgument) as e:
        model.generate(**kwargs)
    expected = cli_error(cli, "generate", "--model", blob, "--out", tmp_path, *flags)
    assert str(e.value) == expected.replace("--", "")


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, "0", True, None.__class__])
def test_bad_seeds(model, seed):
    with pytest.raises(InvalidArgument, match="seed must be"):
        model.generate(seed=seed, sampler="ddim", steps=1)


@pytest.mark.parametrize("steps", [-3, 2.0, "5"])
def test_bad_steps(model, steps):
    with pytest.raises(InvalidArgument, match="steps must be"):
        model.generate(sampler="ddim", steps=steps)


def test_bad_threads_and_memory(blob):
    for kwargs in (dict(threads=-1), dict(threads=1.5), dict(max_memory=0), dict(max_memory="1G")):
        with pytest.raises(InvalidArgument):
            brats_ldm.Model(blob, **kwargs)
    with pytest.raises(MemoryLimitError, match="max_memory is 1000 bytes"):
        brats_ldm.Model(blob, max_memory=1000)


def test_bad_init_noise(model):
    shape = model.latent_shape
    good = np.zeros(shape, np.float32)
    cases = [
        (good.astype(np.float64), "must be float32, got dtype float64"),
        (good.tolist(), "must be a numpy.ndarray of float32, got list"),
        (good[0], "is not a latent"),
        (np.zeros((2, *shape), np.float32), "is not a latent"),
        (np.zeros((shape[0] + 1, *shape[1:]), np.float32), "init_noise does not fit the model: latent shape .* channels"),
        (np.zeros((shape[0], shape[1] + 1, *shape[2:]), np.float32), "not usable: D, H and W must each be divisible"),
        (np.zeros((shape[0], 0, *shape[2:]), np.float32), "empty dimension"),
    ]
    nan = good.copy()
    nan.flat[7] = np.nan
    cases.append((nan, "value 7 is not finite"))
    for noise, message in cases:
        with pytest.raises(InvalidArgument, match=message):
            model.generate(init_noise=noise, sampler="ddim", steps=1)
    with pytest.raises(InvalidArgument, match="is not a latent"):
        model.decode(np.zeros(5, np.float32))
    with pytest.raises(InvalidArgument, match="must be float32"):
        model.decode(np.zeros(shape, np.int32))


def test_strided_init_noise_is_read_in_logical_order(model):
    noise = np.random.default_rng(1).standard_normal(model.latent_shape).astype(np.float32)
    fortran = np.asfortranarray(noise)
    reversed_view = np.ascontiguousarray(noise[..., ::-1])[..., ::-1]
    assert fortran.flags.f_contiguous and not fortran.flags.c_contiguous
    a = model.sample_latent(init_noise=noise, sampler="ddim", steps=1)
    for other in (fortran, reversed_view):
        assert model.sample_latent(init_noise=other, sampler="ddim", steps=1).tobytes() == a.tobytes()


def test_bad_outputs_leave_no_file(model, tmp_path):
    volume = np.zeros(model.volume_shape, np.float32)
    with pytest.raises(InvalidArgument, match="must end in .nii.gz, .nii or .npy"):
        model.generate_to(tmp_path / "v.mha", sampler="ddim", steps=1)
    with pytest.raises(OutputError, match="does not exist"):
        model.generate_to(tmp_path / "no" / "v.nii", sampler="ddim", steps=1)
    with pytest.raises(InvalidArgument, match="must end in .nii or .nii.gz"):
        brats_ldm.save_nifti(tmp_path / "v.npy", volume, model.affine)
    shear = model.affine.copy()
    shear[0, 1] = 1.0
    bad = [
        (dict(volume=volume.astype(np.float64)), InvalidArgument, "must be float32"),
        (dict(volume=volume[0, 0]), InvalidArgument, "is not a volume"),
        (dict(affine=shear), InvalidArgument, "cannot express shear"),
        (dict(affine=np.eye(3)), InvalidArgument, "must be 4x4"),
        (dict(affine=np.diag([1.0, 1.0, 0.0, 1.0])), InvalidArgument, "column 2 is zero"),
        (dict(affine=np.diag([1.0, 1.0, 1.0, 2.0])), InvalidArgument, "last row"),
        (dict(affine="eye"), InvalidArgument, "4x4 array of numbers"),
        (dict(description="x" * 80), InvalidArgument, "longer than 79 bytes"),
        (dict(volume=np.zeros((1, 40000, 1, 1), np.float32)), InvalidArgument, "at most 32767"),
    ]
    for override, cls, message in bad:
        args = dict(volume=volume, affine=model.affine, description="")
        args.update(override)
        with pytest.raises(cls, match=message):
            brats_ldm.save_nifti(tmp_path / "v.nii.gz", **args)
    with pytest.raises(OutputError, match="cannot write"):
        brats_ldm.save_nifti(tmp_path / "no" / "v.nii", volume, model.affine)
    assert os.listdir(tmp_path) == []


def test_unwritable_destination_is_an_output_error(model, tmp_path):
    target = tmp_path / "v.nii"
    target.mkdir()  # a directory where the file should go: the rename fails
    with pytest.raises(OutputError, match="cannot write"):
        brats_ldm.save_nifti(target, np.zeros(model.volume_shape, np.float32), model.affine)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.nii"]


def test_default_model_lookup_error_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("BRATS_LDM_MODEL", str(tmp_path / "nowhere.blob"))
    assert brats_ldm.default_model_path() == str(tmp_path / "nowhere.blob")
    with pytest.raises(ModelError, match="cannot load model .*nowhere.blob"):
        brats_ldm.Model()
