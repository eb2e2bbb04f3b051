#!/usr/bin/env bash
# Seed corpora for the fuzz targets (fuzz/corpus/<target>/, git-ignored), made from the
# repository's fixtures: small fixture files as they are, the state-dict pickles inside the .pt
# fixtures, small NIfTI/.npy/safetensors/checkpoint/manifest/claim files written here with the
# Python standard library in the formats the fixtures and the writers use, and valid blobs from
# ldm-weights' own writer. Every seed is at most 1 MiB (the harness's input bound).
# Usage: scripts/fuzz-seeds.sh [CORPUS_DIR]   (default fuzz/corpus)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-fuzz/corpus}"
mkdir -p "$out"

# Blobs: the weights crate's writer (decoder-only and decoder + UNet, each dtype).
cargo run -q -p ldm-weights --example fuzz_seeds -- "$out/blob_reader"

python3 - "$out" <<'PY'
import glob, gzip, json, os, struct, sys, zipfile

out = sys.argv[1]
fx = "tests/fixtures"
LIMIT = 1 << 20

def put(target, name, data):
    if len(data) > LIMIT:
        return
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def read(p):
    with open(p, "rb") as f:
        return f.read()

# torch.save zips: the small fixtures whole; every fixture's data.pkl for the pickle target.
for p in sorted(glob.glob(f"{fx}/crafted/*.pt") + glob.glob(f"{fx}/monai/*/*.pt")):
    name = os.path.basename(p)
    put("torch_zip", name, read(p))
    try:
        z = zipfile.ZipFile(p)
        for m in z.namelist():
            if m.endswith("/data.pkl"):
                put("torch_pickle", name + ".pkl", z.read(m))
    except zipfile.BadZipFile:
        pass

# safetensors: the small fixtures, and one small file of every float dtype with metadata.
for p in sorted(glob.glob(f"{fx}/monai/*/*.safetensors")):
    put("safetensors", os.path.basename(p), read(p))
def safetensors(tensors, meta=None):
    header, data = {}, b""
    if meta:
        header["__metadata__"] = meta
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data
put("safetensors", "dtypes.safetensors", safetensors([
    ("a.weight", "F32", [2, 2], struct.pack("<4f", 1, -2, 3.5, 0)),
    ("a.bias", "F16", [2], struct.pack("<2e", 0.5, -1)),
    ("b", "BF16", [1, 2], bytes([0x80, 0x3f, 0x00, 0xc0])),
    ("c", "F64", [1], struct.pack("<d", 0.25)),
], {"format": "pt"}))
put("safetensors", "nested.safetensors", safetensors([
    ("state_dict.w", "F32", [3], struct.pack("<3f", 1, 2, 3)),
    ("state_dict.i", "I64", [1], struct.pack("<q", 7)),
]))

# NIfTI: the small real volume (big-endian), gzipped too, and little-endian 3-D/4-D volumes.
anat = read(f"{fx}/real/anatomical.nii")
put("nifti", "anatomical.nii", anat)
put("nifti", "anatomical.nii.gz", gzip.compress(anat, mtime=0))
def nifti(dims, datatype, bitpix, data, sform=True):
    h = bytearray(352)
    struct.pack_into("<i", h, 0, 348)
    nd = len(dims)
    struct.pack_into("<8h", h, 40, nd, *dims, *([1] * (7 - nd)))
    struct.pack_into("<hh", h, 70, datatype, bitpix)
    struct.pack_into("<8f", h, 76, 1, 1.1, 1.1, 1.1, 1, 1, 1, 1)
    struct.pack_into("<fff", h, 108, 352, 1, 0)
    h[123] = 2
    h[148:148 + 9] = b"fuzz seed"
    struct.pack_into("<hh", h, 252, 2, 2 if sform else 0)
    struct.pack_into("<6f", h, 256, 0, 0, 0, -4, -4, -4)
    for r in range(3):
        row = [0.0] * 4
        row[r], row[3] = 1.1, -4.0
        struct.pack_into("<4f", h, 280 + 16 * r, *row)
    h[344:348] = b"n+1\0"
    return bytes(h) + data
f4 = nifti([4, 4, 3], 16, 32, struct.pack("<48f", *[i * 0.5 for i in range(48)]))
put("nifti", "f32_3d.nii", f4)
put("nifti", "f32_3d.nii.gz", gzip.compress(f4, mtime=0))
c4 = nifti([3, 3, 2, 2], 4, 16, struct.pack("<36h", *range(-18, 18)), sform=False)
put("nifti", "i16_4d.nii", c4)
put("nifti", "i16_4d.nii.gz", gzip.compress(c4, mtime=0))
put("nifti", "u8_3d.nii", nifti([2, 2, 2], 2, 8, bytes(range(8))))

# .npy: the fixtures under the size bound.
for p in sorted(glob.glob(f"{fx}/monai/*/*.npy")):
    if os.path.getsize(p) <= 128 << 10:
        put("npy", os.path.basename(os.path.dirname(p)) + "_" + os.path.basename(p), read(p))

# Training checkpoints in trainer/src/checkpoint.rs's layout: magic, header length, JSON
# header, f32 sections, FNV-1a 64 of everything before.
def fnv(b):
    h = 0xCBF29CE484222325
    for x in b:
        h = ((h ^ x) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h
def checkpoint(kind, sections, extra):
    header = {
        "kind": kind, "step": 3, "seed": 7,
        "config": json.load(open("configs/cpu-small.json")),
        "tensors": {"unet": [["conv_in.weight", [4, 2, 3, 3, 3]]]},
        "adam_steps": [3, 3],
        "extra": extra,
        "sections": [{"name": n, "len": len(v)} for n, v in sections],
    }
    body = b"LDMCKPT1"
    h = json.dumps(header).encode()
    body += struct.pack("<Q", len(h)) + h
    for _, v in sections:
        body += struct.pack(f"<{len(v)}f", *v)
    return body + struct.pack("<Q", fnv(body))
put("train_checkpoint", "diffusion.ckpt", checkpoint("diffusion", [("params", [0.5, -1.0, 2.0]), ("adam_m", [0.0] * 3), ("adam_v", [1e-8] * 3)], {"epoch": 1, "cursor": 12}))
put("train_checkpoint", "vae_gan.ckpt", checkpoint("vae_gan", [("g", [1.0, 2.0]), ("d", [])], {}))

# Configs: architecture JSON (convert --config) and training configurations (train --config).
for p in sorted(glob.glob(f"{fx}/configs/*.json")):
    put("arch_config", os.path.basename(p), read(p))
for p in sorted(glob.glob("configs/*.json")):
    put("train_config", os.path.basename(p), read(p))

# MONAI bundle configs: each fixture bundle's inference.json alone, and its autoencoder training
# config merged under it (the target splits its input at the first NUL byte); plus references
# that form cycles, macros and expressions.
for d in sorted(glob.glob(f"{fx}/bundle/*/configs")):
    name = os.path.basename(os.path.dirname(d))
    inf = os.path.join(d, "inference.json")
    if os.path.exists(inf):
        put("bundle_config", f"{name}-inference.json", read(inf))
        train = os.path.join(d, "train_autoencoder.json")
        if os.path.exists(train):
            put("bundle_config", f"{name}-merged", read(train) + b"\0" + read(inf))
put("bundle_config", "cycle.json", json.dumps({"a": "@b", "b": {"x": "@c#0"}, "c": ["@a"], "d": "@d"}).encode())
put("bundle_config", "macros.json", json.dumps({
    "n": 4, "channels": "$[@n * 2, @n * 4]", "net": {"_target_": "X", "ch": "@channels", "m": "%#n"},
    "rel": {"a": 1, "b": "@#a", "c": "@##n"}, "+channels": [1], "net#ch": "@channels#1"}).encode())

# The trainer's data lists (first byte: 0 = dataset.json, 1 = split.json; then the text).
dataset = {"name": "BRATS", "numTraining": 3, "training": [
    {"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"},
    {"image": "./imagesTr/BRATS_002.nii.gz"}, "imagesTr/BRATS_003.nii.gz"], "test": []}
put("train_data_lists", "dataset.json", b"\0" + json.dumps(dataset, indent=1).encode())
split = {"seed": 0, "val_fraction": 0.2, "train": ["d/imagesTr/BRATS_001.nii.gz", "d/imagesTr/BRATS_003.nii.gz"],
         "val": ["d/imagesTr/BRATS_002.nii.gz"]}
put("train_data_lists", "split.json", b"\1" + json.dumps(split, indent=2).encode())

# The batch job's manifest (generate's JSON lines, one torn) and claim files.
def entry(i, **kw):
    e = {"file": f"seed-{i}.nii.gz", "seed": i, "model_checksum": "9f86d081884c7d65", "sampler": "ddim",
         "eta": 0.0, "steps": 50, "device": "cpu", "seconds": 12.5}
    e.update(kw)
    return json.dumps(e, separators=(",", ":"))
lines = [entry(0), entry(1, sampler="ddpm", eta=None, steps=1000, seconds=None),
         entry(2, seed=None, init_noise="noise.npy"), entry(0, seconds=3.0)]
put("batch_manifest", "manifest.jsonl", ("\n".join(lines) + "\n").encode())
put("batch_manifest", "torn.jsonl", ("\n".join(lines[:2]) + '\n{"file":"seed-9').encode())
host = open("/proc/sys/kernel/hostname").read().strip()
try:
    boot = open("/proc/sys/kernel/random/boot_id").read().strip()
except OSError:
    boot = ""
def claim(host, boot, pid, start):
    return f"brats-ldm claim\nhost={host}\nboot={boot}\npid={pid}\nstart={start}\ncreated=1764921600\ntoken=0123456789abcdef\n".encode()
put("batch_claim", "dead_local.claim", claim(host, boot, 4194303, 12345))
put("batch_claim", "live_local.claim", claim(host, boot, 1, 0))
put("batch_claim", "other_boot.claim", claim(host, "00000000-0000-0000-0000-000000000000", 1, 0))
put("batch_claim", "other_host.claim", claim("node-elsewhere", boot, 1, 0))
PY
for d in "$out"/*/; do echo "$(basename "$d"): $(ls "$d" | wc -l) seeds"; done
