"""Hugging Face interop: our checkpoints ARE transformers ``PhiForCausalLM`` folders.

A folder with ``config.json`` (``model_type: phi``) and ``model.safetensors`` (transformers'
parameter names) is the one consolidated checkpoint format of phi-hpc: the trainer writes it, ``eval
run --checkpoint`` and ``--hf-model`` read it the same way, and ``transformers`` loads it with
``PhiForCausalLM.from_pretrained(folder)``. So microsoft/phi-1, downloaded once to a local folder,
can be evaluated or finetuned directly, and our runs can be shared without conversion.

Only two things differ from transformers inside the model: we keep q/k/v as one fused ``qkv``
matrix (split on export, concatenated on import) and we name nothing else differently.

Which folder a run, its ``checkpoints/`` folder or ``latest`` pointer means is
:func:`phi_hpc.run_layout.model_checkpoint`'s decision; here a folder is a folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from phi_hpc.errors import PhiError, UsageError
from phi_hpc.run_layout import MODEL_CONFIG as CONFIG_NAME

WEIGHTS_NAME = "model.safetensors"
SHARD_INDEX_NAME = "model.safetensors.index.json"
LEGACY_WEIGHTS_NAME = "pytorch_model.bin"

_DTYPE_NAMES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}


# --------------------------------------------------------------------------------------------------
# config.json <-> PhiConfig
# --------------------------------------------------------------------------------------------------


def config_to_hf(config, dtype_name: str = "float32", eos_token_id: int | None = 50256) -> dict:
    """transformers' PhiConfig as JSON. Rotary settings are written both the transformers-5 way
    (``rope_parameters``) and the 4.x way (top-level keys), so either version reads them.
    ``<|endoftext|>`` (50256) is recorded as BOS/EOS only if the vocabulary has it (tiny test models
    may not), so transformers' ``generate`` stops where our decoder does."""
    if eos_token_id is not None and eos_token_id >= config.vocab_size:
        eos_token_id = None
    return {
        "architectures": ["PhiForCausalLM"],
        "model_type": "phi",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_heads,
        "hidden_act": "gelu_new",
        "max_position_embeddings": config.max_position_embeddings,
        "layer_norm_eps": config.layer_norm_eps,
        "initializer_range": config.initializer_range,
        "embd_pdrop": config.embd_dropout,
        "attention_dropout": config.attn_dropout,
        "resid_pdrop": config.resid_dropout,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": config.rope_theta,
            "partial_rotary_factor": config.rotary_dim / config.head_dim,
        },
        "rope_theta": config.rope_theta,
        "partial_rotary_factor": config.rotary_dim / config.head_dim,
        "qk_layernorm": False,
        "tie_word_embeddings": False,
        "use_cache": True,
        "bos_token_id": eos_token_id,
        "eos_token_id": eos_token_id,
        "dtype": dtype_name,
        "torch_dtype": dtype_name,
    }


def config_from_hf(hf: dict, source: str = CONFIG_NAME, **overrides):
    """Our :class:`PhiConfig` from a transformers config.json dict; refuses what we do not implement."""
    from phi_hpc.model.phi import PhiConfig

    if hf.get("model_type") != "phi":
        raise UsageError(
            f"{source}: model_type is {hf.get('model_type')!r}, not 'phi'",
            "phi-hpc loads Phi models (e.g. microsoft/phi-1); convert others elsewhere",
        )
    heads = hf["num_attention_heads"]
    unsupported = {
        "num_key_value_heads": (hf.get("num_key_value_heads") or heads) != heads,
        "qk_layernorm": bool(hf.get("qk_layernorm")),
        "tie_word_embeddings": bool(hf.get("tie_word_embeddings")),
        "hidden_act": hf.get("hidden_act", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"),
    }
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        unsupported["rope scaling"] = True
    for key, bad in unsupported.items():
        if bad:
            raise UsageError(
                f"{source}: {key}={hf.get(key, rope)!r} is not supported by phi-hpc's model",
                "phi-1 uses full multi-head attention, untied head, gelu_new, plain RoPE",
            )
    head_dim = hf["hidden_size"] // heads
    factor = rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 0.5))
    theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    fields = dict(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=heads,
        intermediate_size=hf["intermediate_size"],
        rotary_dim=int(head_dim * factor),
        rope_theta=float(theta),
        max_position_embeddings=hf.get("max_position_embeddings", 2048),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-5),
        embd_dropout=float(hf.get("embd_pdrop") or 0.0),
        attn_dropout=float(hf.get("attention_dropout") or 0.0),
        resid_dropout=float(hf.get("resid_pdrop") or 0.0),
        initializer_range=hf.get("initializer_range", 0.02),
    )
    fields.update(overrides)
    try:
        return PhiConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{source}: {exc}") from None


# --------------------------------------------------------------------------------------------------
# state dict <-> transformers names
# --------------------------------------------------------------------------------------------------


def state_dict_to_hf(state: dict) -> dict:
    """Our parameter names -> transformers': only the fused qkv splits into q_proj/k_proj/v_proj."""
    out = {}
    for name, tensor in state.items():
        if ".self_attn.qkv." in name:
            prefix, kind = name.split(".self_attn.qkv.")
            for part, chunk in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                out[f"{prefix}.self_attn.{part}.{kind}"] = chunk.contiguous()
        else:
            out[name] = tensor.contiguous()
    return out


def state_dict_from_hf(hf_state: dict, source: str = WEIGHTS_NAME) -> dict:
    """transformers' names -> ours (q/k/v concatenated); rotary buffers some versions save are dropped."""
    if any(name.startswith("transformer.h.") for name in hf_state):
        raise UsageError(
            f"{source}: this is the pre-2024 'trust_remote_code' phi layout (transformer.h.N.mixer)",
            "download the current microsoft/phi-1 revision, which uses transformers' own layout",
        )
    out, pending = {}, {}
    for name, tensor in hf_state.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue
        for part in ("q_proj", "k_proj", "v_proj"):
            marker = f".self_attn.{part}."
            if marker in name:
                prefix, kind = name.split(marker)
                pending.setdefault((prefix, kind), {})[part] = tensor
                break
        else:
            out[name] = tensor
    for (prefix, kind), parts in pending.items():
        if len(parts) != 3:
            raise PhiError(f"{source}: {prefix}.self_attn has only {sorted(parts)}", "the checkpoint is incomplete")
        import torch

        out[f"{prefix}.self_attn.qkv.{kind}"] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]], 0)
    return out


# --------------------------------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------------------------------


def save_pretrained(model, directory: str | os.PathLike, eos_token_id: int | None = 50256) -> Path:
    """Write ``model`` as a transformers Phi folder. Weights first, config.json last, each under a
    temporary name then renamed: a folder with config.json is complete."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # unwrap DeepSpeed / DDP
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    dtype_name = str(next(iter(state.values())).dtype).replace("torch.", "")
    tmp = directory / (WEIGHTS_NAME + ".tmp")
    save_file(state_dict_to_hf(state), str(tmp), metadata={"format": "pt"})
    os.replace(tmp, directory / WEIGHTS_NAME)
    from phi_hpc.fileio import write_json

    write_json(directory / CONFIG_NAME, config_to_hf(model.config, dtype_name, eos_token_id))
    return directory


def load_pretrained(directory: str | os.PathLike, dtype=None, device="cpu", **config_overrides):
    """Build our :class:`PhiForCausalLM` from any transformers Phi folder (ours or microsoft/phi-1).

    The model is created on the meta device and the checkpoint tensors are assigned into it, so a
    1.3B model costs its weights' memory once, not twice. ``dtype`` (a torch dtype or a name such as
    "bf16") casts; None keeps the stored dtype. ``config_overrides`` replace config fields, e.g.
    ``attention="eager"`` or the dropouts for finetuning.
    """
    import torch

    from phi_hpc.model.phi import PhiForCausalLM

    folder = Path(directory)
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise UsageError(
            f"{folder}: no {CONFIG_NAME} here", "give a Hugging Face Phi folder (a checkpoint step folder)"
        )
    try:
        hf_config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PhiError(f"{config_path}:{exc.lineno}: invalid JSON ({exc.msg})", "the folder is damaged") from None
    config = config_from_hf(hf_config, str(config_path), **config_overrides)
    state = state_dict_from_hf(_read_weights(folder), str(folder))
    if isinstance(dtype, str):
        if dtype not in _DTYPE_NAMES:
            raise UsageError(f"unknown dtype {dtype!r}", f"use one of {', '.join(sorted(_DTYPE_NAMES))}")
        dtype = getattr(torch, _DTYPE_NAMES[dtype])
    state = {
        name: tensor.to(
            device=device, dtype=dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
        )
        for name, tensor in state.items()
    }
    with torch.device("meta"):
        model = PhiForCausalLM(config)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise PhiError(
            f"{folder}: weights do not match config.json ({what})",
            "the config and the weights come from different models",
        )
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def _read_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    if (folder / WEIGHTS_NAME).is_file():
        return load_file(str(folder / WEIGHTS_NAME))
    if (folder / SHARD_INDEX_NAME).is_file():
        index = json.loads((folder / SHARD_INDEX_NAME).read_text(encoding="utf-8"))
        state = {}
        for shard in sorted(set(index["weight_map"].values())):
            state.update(load_file(str(folder / shard)))
        return state
    if (folder / LEGACY_WEIGHTS_NAME).is_file():
        import torch

        return torch.load(folder / LEGACY_WEIGHTS_NAME, map_location="cpu", weights_only=True)
    raise PhiError(
        f"{folder}: no {WEIGHTS_NAME}, {SHARD_INDEX_NAME} or {LEGACY_WEIGHTS_NAME}",
        "the checkpoint folder is incomplete (was the write interrupted?)",
    )
