"""Progress callbacks, cancellation, and Ctrl-C between sampling steps."""

import signal
import subprocess
import sys
import textwrap
import time

import pytest

import brats_ldm
from brats_ldm import Cancelled


def test_progress_reports_every_step_then_decoding(model):
    seen = []
    model.generate(seed=1, sampler="ddim", steps=4, progress=lambda step, total: seen.append((step, total)))
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]


def test_returning_false_cancels_and_the_model_stays_usable(model):
    reference = model.generate(seed=2, sampler="ddim", steps=6)
    with pytest.raises(Cancelled, match="cancelled by the progress callback at step 3 of 6"):
        model.generate(seed=2, sampler="ddim", steps=6, progress=lambda step, total: step != 3)
    with pytest.raises(Cancelled, match="before decoding"):
        model.generate(seed=2, sampler="ddim", steps=6, progress=lambda step, total: step != total)
    # Only False cancels: None and other values continue.
    assert model.generate(seed=2, sampler="ddim", steps=6, progress=lambda s, t: 0).tobytes() == reference.tobytes()
    assert model.generate(seed=2, sampler="ddim", steps=6).tobytes() == reference.tobytes()


def test_exceptions_from_the_callback_propagate(model):
    def boom(step, total):
        if step == 2:
            raise ZeroDivisionError("from the callback")

    with pytest.raises(ZeroDivisionError, match="from the callback"):
        model.generate(seed=3, sampler="ddim", steps=5, progress=boom)
    with pytest.raises(TypeError):
        model.generate(seed=3, sampler="ddim", steps=5, progress=lambda: None)


SCRIPT = textwrap.dedent(
    """
    import sys, time, brats_ldm
    model = brats_ldm.Model(sys.argv[1])
    with_progress = sys.argv[2] == "1"
    steps_seen = []
    def progress(step, total):
        steps_seen.append(step)
        if step == 3:
            print("running", flush=True)
    if not with_progress:
        print("running", flush=True)
    started = time.monotonic()
    try:
        model.generate(seed=0, progress=progress if with_progress else None)  # DDPM, 1000 steps
    except KeyboardInterrupt:
        print("interrupted", len(steps_seen), flush=True)
        # the model works after an interruption
        v = model.generate(seed=1, sampler="ddim", steps=1)
        print("usable", v.shape, flush=True)
        sys.exit(3)
    print("finished", time.monotonic() - started, flush=True)
    """
)


@pytest.mark.parametrize("with_progress", [True, False])
def test_ctrl_c_interrupts_between_steps(blob, with_progress):
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(blob), "1" if with_progress else "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "running"
        time.sleep(0.3)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, (out, err)
    lines = out.splitlines()
    assert lines[0].startswith("interrupted"), out
    if with_progress:
        assert 3 < int(lines[0].split()[1]) < 1000
    assert lines[1] == "usable (1, 40, 48, 32)"
    # one sampling step of this model takes milliseconds; the rest is the second generate
    assert elapsed < 5, elapsed
