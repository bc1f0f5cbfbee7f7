#!/usr/bin/env bash
# Prepare, on a machine WITH a package index, a folder of wheels for a GPU machine WITHOUT one.
#
#   benchmarks/prepare_wheels.sh [DIR] [PYTHON_VERSION]        (defaults: .whl/gpu 3.12)
#   TARGET_HAS="numpy pyarrow ..." benchmarks/prepare_wheels.sh ...   (leave out what the target has)
#   then copy DIR over and run:  python benchmarks/gpu_check.py --wheels DIR
#
# The GPU machine is assumed to bring its own torch (with CUDA), transformers, tokenizers,
# safetensors and triton; this adds what phi-hpc needs beyond them: deepspeed (an sdist upstream:
# built here with `pip wheel` into a pure-Python wheel, its CUDA ops compile at run time), submitit,
# zstandard and the rest of phi-hpc's requirements, as binary wheels for PYTHON_VERSION. torch is
# deliberately NOT included: the machine's CUDA build must stay. DIR/requirements.txt lists what
# gpu_check.py --wheels installs (pip --no-index --find-links DIR -r DIR/requirements.txt).
# .whl/ is git-ignored: wheels never enter the repository.
set -euo pipefail

DIR=${1:-.whl/gpu}
PYVER=${2:-3.12}
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform any)
PYTHON=${PYTHON:-python3}
mkdir -p "$DIR"

# deepspeed: pure Python once its ops are left to the JIT (DS_BUILD_OPS=0); --no-build-isolation
# lets its setup.py see this machine's torch instead of failing on "No module named torch".
DS_BUILD_OPS=0 "$PYTHON" -m pip wheel --no-deps --no-build-isolation "deepspeed==0.19.8" -w "$DIR"

# deepspeed's own requirements (but torch) and phi-hpc's, as binary wheels for the target Python.
REQUIREMENTS=(hjson ninja py-cpuinfo "pydantic>=2" msgpack einops psutil tqdm packaging numpy
              "submitit>=1.5" "zstandard>=0.22" "click>=8.1" "rich>=13" "pyyaml>=6" "pyarrow>=14")
# TARGET_HAS names requirements the GPU machine already has (its image's pip list): they are left out,
# which keeps the folder small where it must travel (pyarrow and numpy alone are ~60 MB).
if [[ -n "${TARGET_HAS:-}" ]]; then
  KEPT=()
  for requirement in "${REQUIREMENTS[@]}"; do
    name=${requirement%%[<>=]*}
    [[ " $TARGET_HAS " == *" $name "* ]] || KEPT+=("$requirement")
  done
  REQUIREMENTS=("${KEPT[@]}")
fi
"$PYTHON" -m pip download --only-binary=:all: --python-version "$PYVER" --implementation cp "${PLATFORMS[@]}" \
    -d "$DIR" "${REQUIREMENTS[@]}"

{
  echo "# what benchmarks/gpu_check.py --wheels installs; already satisfied packages are left alone"
  echo "deepspeed==0.19.8"
  printf '%s\n' "${REQUIREMENTS[@]}"
} > "$DIR/requirements.txt"
echo "wheels for Python $PYVER in $DIR ($(ls "$DIR"/*.whl | wc -l) files); on the GPU machine:"
echo "  python benchmarks/gpu_check.py --wheels $DIR"
