"""Shared fixtures: the repository's default model, the brats-ldm CLI to compare against, and
helpers to run it and to read this process's memory."""

import os
import subprocess
from pathlib import Path

import pytest

import brats_ldm

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BLOB = REPO / "weights" / "default" / "brats-ldm-default.blob"


def rss_bytes(field: str = "VmRSS") -> int:
    """Resident (VmRSS) or peak resident (VmHWM) bytes of this process (Linux /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


@pytest.fixture(scope="session")
def blob() -> Path:
    assert DEFAULT_BLOB.is_file(), f"the default model {DEFAULT_BLOB} is missing"
    return DEFAULT_BLOB


@pytest.fixture(scope="session")
def model(blob):
    return brats_ldm.Model(blob)


@pytest.fixture(scope="session")
def cli() -> Path:
    """The CLI binary: $BRATS_LDM_CLI, else the repository's release build."""
    path = Path(os.environ.get("BRATS_LDM_CLI", REPO / "target" / "release" / "brats-ldm"))
    if not path.is_file():
        pytest.fail(
            f"the brats-ldm CLI is needed to compare against and {path} does not exist: "
            "run `cargo build --release --bin brats-ldm` or set BRATS_LDM_CLI"
        )
    return path


def run_cli(cli: Path, *args, ok: bool = True) -> subprocess.CompletedProcess:
    """Runs the CLI; with ok=False expects it to fail and returns the result."""
    result = subprocess.run([str(cli), *map(str, args)], capture_output=True, text=True, timeout=300)
    if ok:
        assert result.returncode == 0, f"{args}: {result.stderr}"
    else:
        assert result.returncode != 0, f"{args} unexpectedly succeeded"
    return result


def cli_error(cli: Path, *args) -> str:
    """The message of the CLI's `error: ...` line for a failing command."""
    stderr = run_cli(cli, *args, ok=False).stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0][len("error: "):]
