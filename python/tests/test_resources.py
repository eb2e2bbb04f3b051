"""Memory and threads: no leak over many calls, the plan's bytes are what the process grows by,
the GIL is released while computing, and one Model is safe to share between threads."""

import json
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np

import brats_ldm
from conftest import rss_bytes

MiB = 1 << 20


def small_noise(seed):
    # latent [4, 2, 2, 2] decodes to 8x8x8 voxels: milliseconds per call
    return np.random.default_rng(seed).standard_normal((4, 2, 2, 2)).astype(np.float32)


def test_no_leak_over_200_calls(model):
    def calls(n, first):
        for i in range(n):
            v = model.generate(init_noise=small_noise(first + i), seed=i, sampler="ddim", steps=1, eta=1.0)
            assert v.shape == (1, 8, 8, 8)
        for i in range(n // 2):
            latent = model.sample_latent(seed=first + i, sampler="ddim", steps=1)
            assert latent.shape == model.latent_shape

    calls(20, 0)  # warm up: allocator pools, numpy caches, both runtimes once
    before = rss_bytes()
    calls(200, 1000)
    grown = rss_bytes() - before
    # keeping the 300 arrays returned would grow by 1.9 MiB, one runtime plan by 20 MiB
    assert grown < 1 * MiB, f"RSS grew by {grown / MiB:.2f} MiB over 300 calls"


def test_no_leak_when_rebuilding_runtimes_and_models(blob, model):
    def cycle(i):
        # another step count rebuilds the runtime (arena, workspaces, pool); then a fresh Model
        model.generate(init_noise=small_noise(i), sampler="ddim", steps=1 + i % 2)
        m = brats_ldm.Model(blob)
        m.generate(init_noise=small_noise(i), sampler="ddim", steps=1)
        del m

    for i in range(4):
        cycle(i)
    before = rss_bytes()
    for i in range(20):
        cycle(i)
    grown = rss_bytes() - before
    # one leaked Model or runtime is at least 20 MiB (its plan, plus the blob for a Model)
    assert grown < 8 * MiB, f"RSS grew by {grown / MiB:.1f} MiB over 20 cycles"


PLAN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy, brats_ldm
    def status(field):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field + ":"))
    before = status("VmRSS")
    model = brats_ldm.Model(sys.argv[1], threads=2)
    loaded = status("VmRSS")
    model.generate(seed=0, sampler="ddim", steps=2)
    after = status("VmRSS")
    print(json.dumps(dict(before=before, loaded=loaded, after=after, peak=status("VmHWM"), plan=model.plan)))
    """
)


def test_plan_bytes_match_the_measured_growth(blob):
    out = subprocess.run([sys.executable, "-c", PLAN_SCRIPT, str(blob)], capture_output=True, text=True, check=True)
    m = json.loads(out.stdout)
    plan = m["plan"]["total"]
    blob_bytes = blob.stat().st_size
    grown = m["after"] - m["before"]
    # The process holds the blob file (read whole, validated) plus exactly the plan; beyond that
    # only thread stacks, the output volume (240 KiB) and allocator slack.
    expected = plan + blob_bytes
    assert expected - 2 * MiB <= grown <= expected + 6 * MiB, (grown, expected, m)
    assert m["peak"] - m["before"] <= expected + 12 * MiB, m


def test_the_gil_is_released_while_computing(model):
    done = threading.Event()
    result = {}

    def work():
        result["volume"] = model.generate(seed=4, sampler="ddim", steps=20)
        done.set()

    counter = 0
    worker = threading.Thread(target=work)
    started = time.monotonic()
    worker.start()
    while not done.is_set():
        counter += 1
    worker.join()
    elapsed = time.monotonic() - started
    assert result["volume"].tobytes() == model.generate(seed=4, sampler="ddim", steps=20).tobytes()
    # Holding the GIL for the whole call would leave this loop a few switch intervals at most.
    assert elapsed > 0.2 and counter > 100_000, (elapsed, counter)


def test_one_model_shared_by_threads_gives_the_sequential_results(model):
    seeds = list(range(20, 36))

    def make(s):
        # stochastic DDIM: the seed decides the step noise; two step counts: two runtimes
        return model.generate(init_noise=small_noise(s), seed=s, sampler="ddim", steps=2 + s % 2, eta=1.0).tobytes()

    expected = {s: make(s) for s in seeds}
    got = {}
    errors = []

    def work(chunk):
        try:
            for s in chunk:
                got[s] = make(s)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(seeds[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert got == expected


def test_models_in_parallel_threads(blob):
    models = [brats_ldm.Model(blob, threads=1) for _ in range(2)]
    out = [None, None]

    def work(i):
        out[i] = models[i].generate(seed=i, sampler="ddim", steps=3)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        assert np.array_equal(out[i], models[i].generate(seed=i, sampler="ddim", steps=3))
