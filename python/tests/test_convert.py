"""brats_ldm.convert is the CLI's `convert`: the same blob bytes from the same checkpoints, the
same messages on error, nothing left at `out` when it fails."""

from pathlib import Path

import pytest

import brats_ldm
from conftest import REPO, cli_error, run_cli

FIXTURES = REPO / "tests" / "fixtures"
MONAI = FIXTURES / "monai"
NETWORKS = FIXTURES / "configs" / "fixture_networks.json"
AUTOENCODER = MONAI / "autoencoder" / "autoencoder.pt"
UNET = MONAI / "unet" / "unet.pt"


def test_the_blob_bytes_are_the_cli_s(cli, tmp_path):
    ours = tmp_path / "py.blob"
    theirs = tmp_path / "cli.blob"
    done = brats_ldm.convert(ours, autoencoder=AUTOENCODER, unet=UNET, config=NETWORKS)
    run_cli(cli, "convert", "--autoencoder", AUTOENCODER, "--unet", UNET, "--config", NETWORKS, "--out", theirs)
    assert ours.read_bytes() == theirs.read_bytes()
    assert done["bytes"] == ours.stat().st_size
    assert done["dtype"] == "f32"
    assert done["checksum"] == brats_ldm.inspect(ours)["checksum"]["value"]
    assert done["tensors"] == brats_ldm.inspect(ours)["tensor_count"]
    assert any(line.startswith("autoencoder") for line in done["log"]), done["log"]


@pytest.mark.parametrize("dtype", ["bf16", "f16"])
def test_dtypes_and_options_match_the_cli(cli, tmp_path, dtype):
    ours = tmp_path / "py.blob"
    theirs = tmp_path / "cli.blob"
    brats_ldm.convert(
        ours, autoencoder=AUTOENCODER, config=NETWORKS, dtype=dtype, decoder_only=True,
        scale_factor=0.8, latent_shape=(8, 4, 4, 4),
    )
    run_cli(
        cli, "convert", "--autoencoder", AUTOENCODER, "--config", NETWORKS, "--dtype", dtype,
        "--decoder-only", "--scale-factor", 0.8, "--latent-shape", "8,4,4,4", "--out", theirs,
    )
    assert ours.read_bytes() == theirs.read_bytes()


def test_the_converted_blob_generates(tmp_path):
    out = tmp_path / "m.blob"
    brats_ldm.convert(out, autoencoder=AUTOENCODER, unet=UNET, config=NETWORKS)
    volume = brats_ldm.Model(out).generate(seed=1, sampler="ddim", steps=2)
    assert volume.ndim == 4 and volume.dtype.name == "float32"


def test_a_mismatched_checkpoint_has_the_cli_message(cli, tmp_path):
    # The UNet checkpoint given as the autoencoder: the tensors do not fit.
    out = tmp_path / "x.blob"
    with pytest.raises(brats_ldm.CheckpointError) as e:
        brats_ldm.convert(out, autoencoder=UNET, config=NETWORKS)
    message = cli_error(cli, "convert", "--autoencoder", UNET, "--config", NETWORKS, "--out", out)
    assert str(e.value).splitlines()[0] == message.split("\\n")[0]
    assert not out.exists()


def test_a_file_that_is_no_checkpoint(cli, tmp_path):
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint at all")
    out = tmp_path / "x.blob"
    with pytest.raises(brats_ldm.CheckpointError) as e:
        brats_ldm.convert(out, unet=bogus, config=NETWORKS)
    assert str(e.value) == cli_error(cli, "convert", "--unet", bogus, "--config", NETWORKS, "--out", out)
    assert "neither a torch.save zip archive nor a safetensors file" in str(e.value)
    assert not out.exists()


def test_out_naming_an_input_is_refused_and_the_input_kept(tmp_path):
    copy = tmp_path / "unet.pt"
    copy.write_bytes(UNET.read_bytes())
    with pytest.raises(brats_ldm.InvalidArgument, match="same file as the UNet input"):
        brats_ldm.convert(copy, unet=copy, config=NETWORKS)
    assert copy.read_bytes() == UNET.read_bytes()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(), "give bundle=DIR, config=FILE or preset='bundle'"),
        (dict(preset="other", unet=UNET), "unknown preset 'other'"),
        (dict(preset="bundle", config=NETWORKS, unet=UNET), "give one of bundle, config or preset"),
        (dict(config=NETWORKS), "nothing to convert"),
        (dict(config=NETWORKS, unet=UNET, dtype="f8"), "unknown dtype 'f8'"),
        (dict(config=NETWORKS, unet=UNET, latent_shape=(1, 2, 3)), "expected 4 sizes"),
        (dict(config=NETWORKS, unet=UNET, latent_shape=(1, 2, 0, 3)), "positive integers"),
        (dict(config=NETWORKS, unet=UNET, scale_factor=float("nan")), "finite number > 0"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    out = tmp_path / "x.blob"
    with pytest.raises(brats_ldm.InvalidArgument, match=match):
        brats_ldm.convert(out, **kwargs)
    assert not out.exists()


def test_an_unwritable_out_is_an_output_error(tmp_path):
    out = tmp_path / "missing-dir" / "x.blob"
    with pytest.raises(brats_ldm.OutputError):
        brats_ldm.convert(out, unet=UNET, config=NETWORKS)


def test_a_bundle_directory_converts_as_the_cli_does(cli, tmp_path):
    bundle = FIXTURES / "bundle" / "tiny"
    ours = tmp_path / "py.blob"
    theirs = tmp_path / "cli.blob"
    done = brats_ldm.convert(ours, bundle=bundle)
    run_cli(cli, "convert", "--bundle", bundle, "--out", theirs)
    assert ours.read_bytes() == theirs.read_bytes()
    assert any("checkpoint" in line for line in done["log"]), done["log"]
    assert brats_ldm.Model(ours).steps == 20
