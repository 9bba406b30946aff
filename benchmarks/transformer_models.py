"""The transformers models of the benchmark set, built from configs (nothing is downloaded), with seeded random
weights: BERT-base, a GPT-2 (124M) decoder without KV cache and a two-layer Llama-style model.

Each maker returns the model wrapped to take its named inputs positionally (in the order of its inputs dict, which
are also the ONNX input names) and to return the first output only, ``last_hidden_state``; the inputs (int64
``input_ids``, seeded random, and an all-ones int64 ``attention_mask``); and a second set for the output check only,
the same ids with the last quarter of the last row padded (mask 0), so that an exporter which dropped the mask or
baked in its value would fail the check. Attention is transformers' default, ``sdpa``. They export with the dynamo
exporter at opset 18: the TorchScript exporter fails on GPT2Model (``aten::diff``).

transformers imports a top-level package named ``kernels`` (Hugging Face's kernel hub), which this repository's own
``kernels/`` folder shadows whenever the repository root is on ``sys.path``; ``_transformers`` imports it with the
root taken off the path.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("bert_base", "gpt2", "llama_block")
OPSET = 18
#: The Llama-style model: Llama's shapes at about 1B scale, two decoder layers (RMSNorm, rotary embeddings, SwiGLU,
#: grouped-query attention with 16 query and 4 key/value heads of 64).
LLAMA = {"hidden_size": 1024, "intermediate_size": 2816, "num_attention_heads": 16, "num_key_value_heads": 4,
         "num_hidden_layers": 2, "vocab_size": 32000, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
         "hidden_act": "silu"}


@dataclass
class Made:
    """A model of the benchmark set, ready to export and time: what every maker of bench_peers returns."""

    model: Any  # a torch.nn.Module in eval mode, called as model(*inputs.values())
    inputs: dict[str, Any]  # ONNX input name -> example tensor, in the model's positional order
    opset: int = 17
    dynamo_only: bool = False  # the dynamo exporter only (else TorchScript first, dynamo where it fails)
    check: dict[str, Any] | None = None  # a second input set, for the output check only
    description: str = ""
    notes: dict[str, str] = field(default_factory=dict)


def _transformers() -> Any:
    """transformers, imported with the repository root off sys.path (its kernels/ shadows HF's ``kernels``)."""
    if "transformers.modeling_utils" in sys.modules:
        return importlib.import_module("transformers")
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != REPO]
    try:
        module = importlib.import_module("transformers")
        importlib.import_module("transformers.modeling_utils")  # what imports ``kernels``: here, not lazily later
        return module
    finally:
        sys.path[:] = saved


def randomize(model: Any, seed: int) -> None:
    """Seeded weights that keep activations O(1) and make every step matter (transformers initializes weights to
    N(0, 0.02^2), which leaves attention nearly uniform, and norms and biases to (1, 0), which leaves the norms'
    affine steps and the bias adds untested): matrices N(0, 1/fan_in) (a GPT-2 Conv1D stores its weight
    transposed: fan_in is its first dimension), embeddings N(0, 1), norm weights 1 + N(0, 0.1^2), biases
    N(0, 0.1^2)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, module in sorted(model.named_modules(), key=lambda item: item[0]):
            for name, p in sorted(module.named_parameters(recurse=False), key=lambda item: item[0]):
                noise = torch.randn(p.shape, generator=generator, dtype=p.dtype)
                if isinstance(module, torch.nn.Embedding):
                    p.copy_(noise)
                elif p.ndim >= 2:
                    conv1d = type(module).__name__ == "Conv1D"  # transformers.pytorch_utils.Conv1D: (in, out)
                    fan_in = p.shape[0] if conv1d else p.numel() // p.shape[0]
                    p.copy_(noise / fan_in ** 0.5)
                elif name == "weight":
                    p.copy_(1.0 + 0.1 * noise)
                else:
                    p.copy_(0.1 * noise)


def _wrap(inner: Any, names: list[str]) -> Any:
    """The model taking ``names`` positionally (the exporters name inputs by position) and returning
    last_hidden_state only: one output, no pooler, no cache."""
    import torch

    class LastHidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> Any:
            return self.inner(**dict(zip(names, args))).last_hidden_state

    return LastHidden().eval()


def _text_inputs(seed: int, batch: int, seq: int, vocab: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Seeded random ids with an all-ones mask (timed), and the same ids with the last row's last quarter padded
    (checked only)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=generator, dtype=torch.int64)
    mask = torch.ones(batch, seq, dtype=torch.int64)
    padded = mask.clone()
    padded[-1, seq - max(1, seq // 4):] = 0
    return {"input_ids": ids, "attention_mask": mask}, {"input_ids": ids.clone(), "attention_mask": padded}


def make_transformer(name: str, seed: int, batch: int, seq: int = 128) -> Made:
    """One of MODELS, from its config, with seeded random weights (randomize)."""
    import torch

    transformers = _transformers()
    torch.manual_seed(seed)
    if name == "bert_base":
        config = transformers.BertConfig(attn_implementation="sdpa")  # the defaults are BERT-base
        inner = transformers.BertModel(config, add_pooling_layer=False)
        what = "transformers BertModel, BertConfig() (BERT-base: 12 layers, hidden 768, 12 heads, FFN 3072)"
    elif name == "gpt2":
        config = transformers.GPT2Config(use_cache=False, attn_implementation="sdpa")  # the defaults are GPT-2 124M
        inner = transformers.GPT2Model(config)
        what = "transformers GPT2Model, GPT2Config() (GPT-2 124M: 12 layers, hidden 768, 12 heads), no KV cache"
    elif name == "llama_block":
        config = transformers.LlamaConfig(**LLAMA, use_cache=False, attn_implementation="sdpa")
        inner = transformers.LlamaModel(config)
        what = (f"transformers LlamaModel, {LLAMA['num_hidden_layers']} layers, hidden {LLAMA['hidden_size']}, "
                f"SwiGLU {LLAMA['intermediate_size']}, {LLAMA['num_attention_heads']} query / "
                f"{LLAMA['num_key_value_heads']} key-value heads, RMSNorm, rotary, no KV cache")
    else:
        raise ValueError(f"unknown transformers model {name!r}: expected one of {', '.join(MODELS)}")
    inner.eval()
    randomize(inner, seed)
    inputs, check = _text_inputs(seed, batch, seq, config.vocab_size)
    return Made(_wrap(inner, list(inputs)), inputs, opset=OPSET, dynamo_only=True, check=check,
                description=f"{what}; inputs input_ids, attention_mask int64 [B, {seq}]; output last_hidden_state",
                notes={"attention": config._attn_implementation})
