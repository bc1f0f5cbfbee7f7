"""The files phi-hpc ships beside its code: configs (run configs, model presets, cluster profiles)
and sbatch templates. One resolver for a source checkout and an installed wheel.

The repository keeps them where a user looks for them, top-level ``configs/`` and ``slurm/templates/``,
and that stays their only copy: ``setup.py`` maps those folders into the package at build time
(``phi_hpc/configs``, ``phi_hpc/templates`` inside the wheel). So an installed package finds them
through :mod:`importlib.resources`, and a checkout (editable install, ``PYTHONPATH``, a fresh clone)
finds the same names one folder up. ``PHI_HPC_CONFIG_DIR`` points the configs at another folder
(a site's own presets).

Torch-free: ``phi-hpc configs list|copy`` runs on login nodes.
"""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

from phi_hpc.errors import UsageError
from phi_hpc.paths import SOURCE_ROOT

CONFIG_DIR_ENV = "PHI_HPC_CONFIG_DIR"
# packaged name -> the folder of a source checkout it is built from (setup.py's package_dir says the same)
PACKAGED = {"configs": Path("configs"), "templates": Path("slurm") / "templates"}
TEMPLATE_SUFFIXES = (".sbatch",)


def checkout_root() -> Path | None:
    """The source checkout phi_hpc is imported from (its folder holds setup.py), or None when installed.

    Child processes and jobs put a checkout on ``PYTHONPATH`` so they import the same code; an installed
    package needs nothing (the same interpreter finds it), and putting site-packages on ``PYTHONPATH``
    would place it before the standard library.
    """
    root = SOURCE_ROOT
    return root if (root / "setup.py").is_file() and (root / "phi_hpc").is_dir() else None


def packaged_dir(name: str) -> Path:
    """``configs`` or ``templates``: the installed package's copy, else the checkout's folder."""
    if name not in PACKAGED:
        raise ValueError(f"unknown packaged folder {name!r}")
    installed = resources.files("phi_hpc") / name
    if installed.is_dir():
        return Path(str(installed))
    checkout = SOURCE_ROOT / PACKAGED[name]
    if checkout.is_dir():
        return checkout
    raise UsageError(
        f"phi-hpc's {name} are missing from {Path(str(installed))} and {checkout}",
        "reinstall phi-hpc (pip install --force-reinstall phi-hpc)",
    )


def config_dir() -> Path:
    """Where named configs (``model: phi-1``, ``--profile a100x8``, ``tiny-pretrain``) are looked up."""
    override = os.environ.get(CONFIG_DIR_ENV)
    return Path(override) if override else packaged_dir("configs")


def templates_dir() -> Path:
    return packaged_dir("templates")


def named_config(name: str, section: str = "") -> Path | None:
    """``tiny-pretrain`` -> configs/tiny-pretrain.yaml; ``model/tiny`` or (``tiny``, ``model``) likewise."""
    base = config_dir() / section if section else config_dir()
    for candidate in (base / f"{name}.yaml", base / name):
        if candidate.is_file():
            return candidate
    return None


def known_names(section: str = "") -> list[str]:
    folder = config_dir() / section if section else config_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def list_packaged() -> list[str]:
    """Every shipped file as ``configs/...`` or ``templates/...`` (what ``copy`` accepts)."""
    listed = [f"configs/{p.relative_to(config_dir()).as_posix()}" for p in sorted(config_dir().rglob("*.yaml"))]
    listed += [f"templates/{p.name}" for p in sorted(templates_dir().iterdir()) if p.suffix in TEMPLATE_SUFFIXES]
    return listed


def _source_of(name: str) -> Path:
    """``configs/model/tiny.yaml``, ``model/tiny``, ``tiny-pretrain``, ``templates/eval.sbatch`` -> the file."""
    head, _, rest = name.partition("/")
    if head == "templates" and rest:
        path = templates_dir() / rest
    else:
        relative = rest if head == "configs" and rest else name
        path = config_dir() / relative
        if not path.is_file():
            path = config_dir() / f"{relative}.yaml"
    if not path.is_file():
        raise UsageError(f"no shipped file named {name!r}", "see `phi-hpc configs list`")
    return path


def copy_packaged(names: list[str], dest: Path, force: bool = False) -> list[Path]:
    """Copy shipped files out to edit them; keeps their layout (``configs/model/tiny.yaml``) under DEST
    so that a copied run config still finds its copied model preset. Refuses to overwrite unless ``force``."""
    chosen = names or list_packaged()
    sources = [_source_of(name) for name in chosen]
    written = []
    for source in sources:
        relative = (
            Path("templates") / source.name
            if source.suffix in TEMPLATE_SUFFIXES
            else Path("configs") / source.relative_to(config_dir())
        )
        target = dest / relative
        if target.exists() and not force:
            raise UsageError(f"{target} exists", "pass --force to overwrite it, or choose another --to folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        written.append(target)
    return written
