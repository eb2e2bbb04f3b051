#!/usr/bin/env bash
# Installs NVIDIA's nvcc 13.0 (compiler only, no driver, no GPU needed) from PyPI into a Python
# virtual environment, so `cargo build -p ldm-runtime --features cuda` can compile cuda/*.cu.
#
# Usage: scripts/install-nvcc.sh [VENV_DIR]
#   VENV_DIR defaults to $LDM_NVCC_VENV, else <repo>/.venv-nvcc (git-ignored).
# Idempotent: when nvcc already runs from the venv, nothing is downloaded.
# Prints the absolute path of nvcc on its last line of stdout; progress goes to stderr.
#
# Why 13.0.2 exactly: the GPU machines' driver (580) may refuse to JIT PTX from a newer nvcc.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-${LDM_NVCC_VENV:-$repo_root/.venv-nvcc}}"
python="${PYTHON:-python3}"
spec='cuda-toolkit[nvcc,crt,nvvm,cudart,cccl]==13.0.2'

find_nvcc() {
    # The wheel layout puts nvcc under site-packages/nvidia/cu13/bin for whichever python the venv has.
    local candidate
    for candidate in "$venv"/lib/python3*/site-packages/nvidia/cu13/bin/nvcc; do
        if [ -x "$candidate" ]; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

if nvcc_path="$(find_nvcc)" && "$nvcc_path" --version >/dev/null 2>&1; then
    echo "install-nvcc: already installed in $venv" >&2
    printf '%s\n' "$nvcc_path"
    exit 0
fi

if ! command -v "$python" >/dev/null 2>&1; then
    echo "install-nvcc: '$python' not found; set PYTHON to a Python 3 interpreter" >&2
    exit 1
fi

if [ ! -x "$venv/bin/pip" ]; then
    echo "install-nvcc: creating virtual environment $venv" >&2
    "$python" -m venv "$venv"
fi

echo "install-nvcc: pip install $spec" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check "$spec" >&2

if ! nvcc_path="$(find_nvcc)"; then
    echo "install-nvcc: pip finished but no nvcc under $venv/lib/python3*/site-packages/nvidia/cu13/bin" >&2
    exit 1
fi
"$nvcc_path" --version >&2
printf '%s\n' "$nvcc_path"
