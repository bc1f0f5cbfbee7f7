"""The config mechanism: strict, typed, overridable, errors that name the key and the file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from phi_hpc.config import dump_yaml, load_config, parse_overrides, read_yaml
from phi_hpc.errors import UsageError


@dataclass(frozen=True)
class Optim:
    lr: float = 1e-3
    warmup: int = 750
    schedule: Literal["linear", "cosine"] = "linear"


@dataclass(frozen=True)
class Example:
    name: str = "run"
    steps: int = 10
    paths: list[str] = field(default_factory=list)
    seed: int | None = None
    optim: Optim = field(default_factory=Optim)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_file_and_overrides_in_order(tmp_path):
    path = write(tmp_path, "steps: 20\noptim:\n  lr: 3e-4\n")
    cfg = load_config(Example, path, ["optim.warmup=5", "paths=[a,b]", "seed=7"])
    assert cfg == Example(steps=20, paths=["a", "b"], seed=7, optim=Optim(lr=3e-4, warmup=5))


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "optim:\n  lrr: 1\n")
    with pytest.raises(UsageError) as err:
        load_config(Example, path)
    assert "optim.lrr" in err.value.message and str(path) in err.value.message
    assert err.value.exit_code == 2


def test_wrong_type_names_key(tmp_path):
    with pytest.raises(UsageError, match="steps must be an integer"):
        load_config(Example, write(tmp_path, "steps: ten\n"))
    with pytest.raises(UsageError, match="optim.schedule must be one of"):
        load_config(Example, None, ["optim.schedule=step"])


def test_bad_yaml_names_line(tmp_path):
    with pytest.raises(UsageError, match=r"c.yaml:2"):
        load_config(Example, write(tmp_path, "steps: 1\n  bad: [\n"))


def test_bad_override_syntax():
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_overrides(["steps"])


def test_roundtrip_through_yaml(tmp_path):
    cfg = load_config(Example, None, ["name=x", "optim.lr=0.5"])
    dump_yaml(cfg, tmp_path / "out.yaml")
    assert load_config(Example, tmp_path / "out.yaml") == cfg
    assert read_yaml(tmp_path / "out.yaml")["optim"]["lr"] == 0.5


def test_named_sub_config_is_loaded_from_file(tmp_path):
    (tmp_path / "fast.yaml").write_text("lr: 0.1\nschedule: cosine\n")
    path = write(tmp_path, "optim: fast.yaml\n")
    assert load_config(Example, path).optim == Optim(lr=0.1, schedule="cosine")
    with pytest.raises(UsageError, match="no config named"):
        load_config(Example, write(tmp_path, "optim: nope\n"))
