"""The package computes and writes exactly what the CLI does: the same volume bits for the same
seed and options, the same file bytes, the same inspect report."""

import json

import numpy as np
import pytest

import brats_ldm
from conftest import run_cli


def cli_volume(cli, blob, tmp_path, *args):
    out = tmp_path / "cli"
    run_cli(cli, "generate", "--model", blob, "--out", out, "--format", "npy", "--quiet", *args)
    files = sorted(out.glob("*.npy"))
    assert len(files) == 1, files
    return np.load(files[0])


def assert_same_bits(a, b):
    assert a.dtype == np.float32 and b.dtype == np.float32
    assert a.shape == b.shape
    assert a.tobytes() == b.tobytes(), f"max abs difference {np.abs(a - b).max()}"


def test_default_settings_match_the_cli(cli, blob, model, tmp_path):
    # The default model's own sampler (DDPM, 1000 steps), as `generate --seed 7` runs it.
    ours = model.generate(seed=7)
    assert_same_bits(ours, cli_volume(cli, blob, tmp_path, "--seed", 7))


@pytest.mark.parametrize(
    "kwargs,args",
    [
        (dict(seed=3, sampler="ddim", steps=5), ["--seed", 3, "--sampler", "ddim", "--steps", 5]),
        (dict(seed=11, sampler="ddim", steps=4, eta=0.5), ["--seed", 11, "--sampler", "ddim", "--steps", 4, "--eta", 0.5]),
        (dict(seed=2**64 - 1, sampler="ddim", steps=2), ["--seed", 2**64 - 1, "--sampler", "ddim", "--steps", 2]),
    ],
)
def test_ddim_settings_match_the_cli(cli, blob, model, tmp_path, kwargs, args):
    assert_same_bits(model.generate(**kwargs), cli_volume(cli, blob, tmp_path, *args))


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_init_noise_matches_the_cli(cli, blob, model, tmp_path, eta):
    noise = np.random.default_rng(5).standard_normal((1, *model.latent_shape)).astype(np.float32)
    path = tmp_path / "noise.npy"
    np.save(path, noise)
    args = ["--init-noise", path, "--seed", 9, "--sampler", "ddim", "--steps", 3, "--eta", eta]
    ours = model.generate(init_noise=noise, seed=9, sampler="ddim", steps=3, eta=eta)
    assert_same_bits(ours, cli_volume(cli, blob, tmp_path, *args))


@pytest.mark.parametrize("fmt", ["nii.gz", "nii", "npy"])
def test_generate_to_writes_the_cli_file_bytes(cli, blob, model, tmp_path, fmt):
    out = tmp_path / "cli"
    run_cli(cli, "generate", "--model", blob, "--out", out, "--format", fmt, "--seed", 4, "--sampler", "ddim", "--steps", 3, "--quiet")
    expected = (out / f"seed-000004.{fmt}").read_bytes()
    ours = tmp_path / f"ours.{fmt}"
    volume = model.generate_to(ours, seed=4, sampler="ddim", steps=3)
    assert ours.read_bytes() == expected
    assert_same_bits(volume, model.generate(seed=4, sampler="ddim", steps=3))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "temporary files left"


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_generate_to_from_init_noise_writes_the_cli_file_bytes(cli, blob, model, tmp_path, eta):
    noise = np.random.default_rng(3).standard_normal(model.latent_shape).astype(np.float32)
    np.save(tmp_path / "noise.npy", noise)
    out = tmp_path / "cli"
    run_cli(cli, "generate", "--model", blob, "--out", out, "--format", "nii", "--init-noise", tmp_path / "noise.npy",
            "--seed", 12, "--sampler", "ddim", "--steps", 2, "--eta", eta, "--quiet")
    ours = tmp_path / "ours.nii"
    model.generate_to(ours, init_noise=noise, seed=12, sampler="ddim", steps=2, eta=eta)
    assert ours.read_bytes() == (out / "init-noise.nii").read_bytes()


def test_save_nifti_with_the_model_affine_writes_the_cli_bytes(cli, blob, model, tmp_path):
    out = tmp_path / "cli"
    run_cli(cli, "generate", "--model", blob, "--out", out, "--format", "nii", "--seed", 1, "--sampler", "ddim", "--steps", 2, "--quiet")
    expected = (out / "seed-000001.nii").read_bytes()
    volume = model.generate(seed=1, sampler="ddim", steps=2)
    ours = tmp_path / "v.nii"
    brats_ldm.save_nifti(ours, volume, model.affine, description=f"seed=1 model={model.checksum} ddim2")
    assert ours.read_bytes() == expected
    # Without the description only the 80 description bytes differ.
    brats_ldm.save_nifti(ours, volume, model.affine)
    got = ours.read_bytes()
    assert got[:148] == expected[:148] and got[228:] == expected[228:]


def test_save_nifti_header_is_what_nibabel_style_readers_expect(model, tmp_path):
    # An independent read of the header fields with numpy (no nibabel needed).
    volume = np.arange(np.prod(model.volume_shape), dtype=np.float32).reshape(model.volume_shape)
    path = tmp_path / "v.nii"
    brats_ldm.save_nifti(path, volume, model.affine)
    raw = path.read_bytes()
    dims = np.frombuffer(raw, "<i2", 8, 40)
    assert list(dims[:4]) == [3, *model.volume_shape[1:]]
    srow = np.frombuffer(raw, "<f4", 12, 280).reshape(3, 4)
    np.testing.assert_array_equal(srow, model.affine[:3].astype(np.float32))
    data = np.frombuffer(raw, "<f4", offset=352).reshape(model.volume_shape[1:][::-1]).transpose(2, 1, 0)
    np.testing.assert_array_equal(data, volume[0])


def test_sample_latent_then_decode_is_generate(model):
    for kwargs in (dict(seed=5, sampler="ddim", steps=3), dict(seed=6, sampler="ddim", steps=2, eta=0.7)):
        latent = model.sample_latent(**kwargs)
        assert latent.shape == model.latent_shape and latent.dtype == np.float32
        assert_same_bits(model.decode(latent), model.generate(**kwargs))
        assert_same_bits(model.decode(latent[None]), model.generate(**kwargs))


def test_thread_count_does_not_change_the_bits(blob, model):
    one = brats_ldm.Model(blob, threads=1)
    assert one.threads == 1
    assert_same_bits(one.generate(seed=8, sampler="ddim", steps=2), model.generate(seed=8, sampler="ddim", steps=2))


def test_slab_decoding_under_max_memory_matches_to_rounding(blob, model):
    plan = model.plan
    limit = (plan["total"] - plan["weights"]) // 2
    small = brats_ldm.Model(blob, max_memory=limit)
    assert small.plan["total"] - small.plan["weights"] <= limit
    assert small.plan["arena"] < plan["arena"]
    # Slab decoding accumulates the normalisation statistics per slab: equal to rounding, not
    # bit for bit (a property of the runtime, the same through every interface).
    a = small.generate(seed=8, sampler="ddim", steps=2)
    b = model.generate(seed=8, sampler="ddim", steps=2)
    assert np.linalg.norm(a - b) <= 1e-6 * np.linalg.norm(b)


@pytest.mark.parametrize("tensors", [False, True])
def test_inspect_is_the_cli_report(cli, blob, tensors):
    args = ["inspect", blob, "--json"] + (["--tensors"] if tensors else [])
    expected = json.loads(run_cli(cli, *args).stdout)
    assert brats_ldm.inspect(blob, tensors=tensors) == expected


def test_model_properties(blob, model):
    report = brats_ldm.inspect(blob)
    assert model.config == report["config"]
    assert model.checksum == report["checksum"]["value"]
    assert model.latent_shape == tuple(report["config"]["latent_shape"])
    assert model.sampler == "ddpm" and model.steps == 1000
    plan = model.plan
    assert set(plan) == {"weights", "arena", "workspaces", "state", "total"}
    assert plan["total"] == plan["weights"] + plan["arena"] + plan["workspaces"] + plan["state"]
    assert model.affine.shape == (4, 4) and model.affine.dtype == np.float64
    spacing = report["config"]["geometry"]["spacing_mm"]
    np.testing.assert_array_equal(np.diag(model.affine)[:3], spacing)
    # The centre voxel sits at world (0, 0, 0).
    centre = (np.array(model.volume_shape[1:]) - 1) / 2
    np.testing.assert_allclose(model.affine @ np.r_[centre, 1.0], [0, 0, 0, 1], atol=1e-9)
    assert "brats-ldm-default.blob" in repr(model)
