"""Mean-pooled hidden states of a causal LM: the paper's CodeGen embedding, made to run at corpus scale.

Scale is what this module is about (35M files of The Stack). Three choices make it cheap:

* **Embedding only.** On phi models the blocks and the final layer norm run, never the LM head: the
  head over a 51200-token vocabulary is the single largest matmul of a small model, and its logits
  are not used. Other architectures load through transformers' ``AutoModel``, which has no head.
* **Length bucketing.** Texts are sorted by token count before batching, so a batch pads to about
  its own length instead of the longest file's; results come back in the input order.
* **Device and dtype.** ``RuntimeOptions(device="cuda", dtype="bf16")`` on a GPU node. They are
  runtime options, not part of the trained model: a model trained on fp32 CPU features scores bf16
  GPU features (the difference is rounding, measured in the tests).

The model is loaded once per process (:func:`cached_lm_embedder`): prepare's workers, ``quality
score`` shards and decontamination all ask for it many times.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from phi_hpc.errors import UsageError

DTYPES = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class RuntimeOptions:
    """Where and how an LM embedder runs; none of it changes what a model was trained on."""

    device: str = "cpu"  # "cpu", "cuda", "cuda:1", ...
    dtype: str = "fp32"  # fp32 | bf16 | fp16
    batch_size: int = 8
    bucket: bool = True  # sort by length before batching

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise UsageError(f"--dtype {self.dtype!r} is not one of {', '.join(DTYPES)}", "e.g. --dtype bf16 on a GPU")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size {self.batch_size} must be >= 1")

    def check_device(self) -> None:
        """A one-line error instead of a CUDA traceback when the node has no GPU."""
        import torch

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError(
                f"--device {self.device}: no CUDA device on this node", "run on a GPU node, or pass --device cpu"
            )


class LMEmbedder:
    """``embed(texts) -> float32[len(texts), hidden]``: mean over each text's real tokens of the final
    (layer-normed) hidden states. Sequences are right-padded: with causal attention, padding never
    changes the real tokens' states, and the mean only covers real tokens."""

    def __init__(
        self,
        model_dir: str,
        tokenizer: str | None = None,
        max_tokens: int = 512,
        batch_size: int = 8,
        runtime: RuntimeOptions | None = None,
    ):
        import torch
        from tokenizers import Tokenizer

        from phi_hpc.run_layout import model_checkpoint

        self.runtime = runtime or RuntimeOptions(batch_size=batch_size)
        self.runtime.check_device()
        folder = model_checkpoint(model_dir).folder  # an HF folder, a checkpoint step, a run (its latest)
        tokenizer_path = Path(tokenizer) if tokenizer else folder / "tokenizer.json"
        if not tokenizer_path.is_file():
            raise UsageError(f"no tokenizer.json in {folder}", "pass --tokenizer PATH/tokenizer.json")
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.max_tokens = max_tokens
        self.batch_size = self.runtime.batch_size
        self._torch = torch
        self._dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.runtime.dtype]
        if _model_type(folder) == "phi":
            from phi_hpc.model.hf import load_pretrained

            self._model = load_pretrained(folder, dtype=self._dtype, device=self.runtime.device)
            self._hf = False
        else:
            from transformers import AutoModel

            self._model = AutoModel.from_pretrained(str(folder), dtype=self._dtype).to(self.runtime.device).eval()
            self._hf = True
        self.batches = 0  # forward passes so far (the bucketing test counts padding through it)
        self.padded_tokens = 0
        self.width = int(self.embed(["x = 1\n"]).shape[1])

    def _hidden(self, ids, mask):
        if self._hf:
            return self._model(input_ids=ids, attention_mask=mask).last_hidden_state
        return phi_hidden_states(self._model, ids)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids[: self.max_tokens] or [0] for e in self._tokenizer.encode_batch(list(texts))]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self.encode(texts)
        order = (
            sorted(range(len(encodings)), key=lambda i: len(encodings[i]))
            if self.runtime.bucket
            else list(range(len(encodings)))
        )
        out: np.ndarray | None = None
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            pooled = self._embed_batch([encodings[i] for i in rows])
            if out is None:
                out = np.zeros((len(encodings), pooled.shape[1]), dtype=np.float32)
            out[rows] = pooled
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)

    def _embed_batch(self, encodings: list[list[int]]) -> np.ndarray:
        torch = self._torch
        longest = max(len(e) for e in encodings)
        ids = torch.zeros(len(encodings), longest, dtype=torch.long)
        mask = torch.zeros(len(encodings), longest, dtype=torch.float32)
        for row, e in enumerate(encodings):
            ids[row, : len(e)] = torch.tensor(e)
            mask[row, : len(e)] = 1.0
        self.batches += 1
        self.padded_tokens += len(encodings) * longest
        device = self.runtime.device
        with torch.inference_mode():
            hidden = self._hidden(ids.to(device), mask.long().to(device)).float().cpu()
        pooled = (hidden * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True)
        return pooled.numpy()


def phi_hidden_states(model, input_ids):
    """Our PhiForCausalLM's final layer-normed hidden states, ``[B, T, H]``, without the LM head."""
    import torch

    from phi_hpc.model.phi import rotary_cos_sin

    backbone = model.model
    batch, length = input_ids.shape
    positions = torch.arange(length, device=input_ids.device).expand(batch, length)
    x = backbone.embed_tokens(input_ids)
    cos, sin = rotary_cos_sin(positions, model.config.rotary_dim, model.config.rope_theta, x.dtype)
    for block in backbone.layers:
        x = block(x, cos, sin, None, None)
    return backbone.final_layernorm(x)


def _model_type(folder: Path) -> str | None:
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, json.JSONDecodeError):
        raise UsageError(f"{folder / 'config.json'}: unreadable or invalid JSON", "the folder is damaged") from None


@functools.lru_cache(maxsize=2)
def cached_lm_embedder(model_dir: str, tokenizer: str | None, max_tokens: int, runtime: RuntimeOptions) -> LMEmbedder:
    """One loaded model per (folder, settings) per process."""
    return LMEmbedder(model_dir, tokenizer, max_tokens, runtime=runtime)
