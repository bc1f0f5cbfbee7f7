"""One configuration mechanism for every command: YAML files -> frozen, typed dataclasses.

Why not plain dicts: a typo in a 36k-step pretraining config should fail on the login node in
milliseconds, naming the key and the file, not after the job waited a day in the queue. So loading is
strict: unknown keys and wrong types are :class:`~phi_hpc.errors.UsageError` s.

Rules, in order of precedence (last wins): dataclass defaults < YAML file < ``--set a.b=value``.
``--set`` values are parsed as YAML scalars/lists (``--set optim.lr=3e-4``, ``--set data.paths=[a,b]``).
A field whose type is itself a dataclass may be given as a string: the name of a file in
``configs/<field>/`` (``model: tiny`` -> ``configs/model/tiny.yaml``) or a path relative to the file
that mentions it. That keeps `pretrain.yaml` short and the model zoo in one place.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from phi_hpc.errors import UsageError
from phi_hpc.resources import config_dir, known_names, named_config

T = TypeVar("T")

CONFIG_DIR = config_dir()  # the shipped configs (phi_hpc.resources: a checkout's configs/ or the wheel's copy)


def read_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping, turning every failure into an error that names the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist", "check the config path (e.g. configs/pretrain.yaml)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UsageError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})", "fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def resolve_config_path(path: str | os.PathLike) -> Path:
    """A config file as given, else a shipped config of that name (``tiny-pretrain``, ``configs/pretrain.yaml``),
    so an installed phi-hpc runs its packaged configs from any directory."""
    given = Path(path)
    if given.is_file():
        return given
    name = given.as_posix()
    name = name[len("configs/") :] if name.startswith("configs/") else name
    name = name[: -len(".yaml")] if name.endswith(".yaml") else name
    return named_config(name) or given


def parse_overrides(items: Iterable[str]) -> dict:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}``; values are YAML scalars or lists."""
    tree: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected KEY=VALUE", "e.g. --set optim.lr=3e-4")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UsageError(f"--set {item!r}: {part} is both a value and a section")
        node[parts[-1]] = value
    return tree


def merge(base: Mapping, update: Mapping) -> dict:
    """Deep-merge ``update`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> T:
    """Build ``cls`` from an optional YAML file plus ``--set`` overrides, strictly."""
    path = resolve_config_path(path) if path else path
    data = read_yaml(path) if path else {}
    data = merge(data, parse_overrides(overrides))
    source = str(path) if path else "--set"
    return from_dict(cls, data, source=source, base_dir=Path(path).parent if path else Path.cwd())


def from_dict(cls: type[T], data: Mapping, source: str = "<dict>", base_dir: Path | None = None, prefix: str = "") -> T:
    """Construct dataclass ``cls`` from ``data``, checking every key and type against the fields."""
    if not isinstance(data, Mapping):
        raise UsageError(f"{source}: {prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UsageError(
            f"{source}: unknown key '{prefix}{unknown[0]}' in {cls.__name__}",
            f"valid keys: {', '.join(sorted(fields))}",
        )
    kwargs = {name: _coerce(hints[name], value, source, base_dir, f"{prefix}{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{source}: {prefix.rstrip('.') or cls.__name__}: {exc}") from None


def _coerce(tp: Any, value: Any, source: str, base_dir: Path | None, key: str) -> Any:
    def bad(expected: str) -> UsageError:
        return UsageError(f"{source}: {key} must be {expected}, got {value!r}", f"fix {key} in {source}")

    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, source, base_dir, key)
            except UsageError as exc:
                errors.append(exc)
        raise errors[0] if errors else bad(str(tp))
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise bad("one of " + ", ".join(map(repr, typing.get_args(tp))))
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, str):
            value = read_yaml(_resolve_named_config(value, key.split(".")[-1], base_dir, source))
        return from_dict(tp, value, source, base_dir, prefix=f"{key}.")
    if origin in (list, tuple, list, tuple) or tp in (list, tuple):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and origin in (list, tuple):
            value = [value]  # a single value where a list is expected: friendlier for --set
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(item_tp, v, source, base_dir, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin in (dict, dict) or tp is dict:
        if not isinstance(value, Mapping):
            raise bad("a mapping")
        args = typing.get_args(tp)
        val_tp = args[1] if args else Any
        return {k: _coerce(val_tp, v, source, base_dir, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad("an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "3e-4" as a string
            except ValueError:
                pass
        raise bad("a number")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad("a string")
    if tp is Path:
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise bad("a path")
    return value


def _resolve_named_config(name: str, section: str, base_dir: Path | None, source: str) -> Path:
    candidates = []
    if base_dir is not None:
        candidates.append(base_dir / name)
    candidates.append(Path(name))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if packaged := named_config(name, section):
        return packaged
    known = known_names(section)
    raise UsageError(
        f"{source}: {section}: no config named {name!r}", f"use a file path or one of: {', '.join(known) or '(none)'}"
    )


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain YAML/JSON-ready data (paths as strings, tuples as lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dump_yaml(obj: Any, path: str | os.PathLike) -> None:
    """Write the resolved config so a run can be repeated exactly (atomically)."""
    from phi_hpc.fileio import atomic_write

    with atomic_write(path) as handle:
        yaml.safe_dump(to_dict(obj), handle, sort_keys=False)


def flatten(tree: Mapping, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (the dotted keys ``--set`` takes)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
