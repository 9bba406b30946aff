"""Export small random-weight transformers to ONNX as test models: ``tests/data/transformers/*.onnx``.

Run by hand, never in CI (it needs torch and transformers, which the project does not depend on)::

    python -m pip install torch==2.13.0 transformers==5.25.0 onnxscript==0.7.2
    python -m pip uninstall -y kernels              # transformers' optional hub-kernels package: its top-level
                                                    # name clashes with the repository's kernels/ (and
                                                    # tests/test_docs.py refuses a top-level `kernels` module)
    python tests/models/make_transformers.py

Versions used for the committed files: torch 2.13.0 (CPU build), transformers 5.25.0, onnxscript 0.7.2, onnx 1.23.2.
Every model is built from a config (nothing is downloaded), its weights drawn from a fixed seed, and exported with
static shapes. torchvision is not used: beside torch 2.13.0 it does not import, and the release that does is a
5.5 GB CUDA build; swin and vit are transformers' SwinModel and ViTModel at the width of torchvision's tiny configs.

Each export writes its exporter, opset and config to ``tests/data/transformers/README.md`` (regenerated with the
models). The attention implementation is eager for every model (the form each model's own Python writes), and
transformers' default SDPA for ``*_sdpa`` (what a user exporting the model as it comes gets; the dynamo exporter
decomposes torch's scaled_dot_product_attention into MatMul/Mul/Add/Softmax and a Where(IsNaN) guard). The
TorchScript exporter (``dynamo=False``) also exports BERT and GPT-2 with these versions; the dynamo one is used for
all, as the exporter torch now defaults to.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(HERE), "data", "transformers")
#: The dynamic-axis exports: a folder of their own, since every model in OUT has static shapes (the GPU tests build
#: each file there as it is).
OUT_DYNAMIC = os.path.join(os.path.dirname(HERE), "data", "dynamic")
SEED = 22
BATCH = 2
SEQ = 16
OPSET = 18


@dataclass(frozen=True)
class Export:
    """One model to export: a transformers model class and config, its inputs and the exporter that works on it."""

    name: str
    model: str  # the transformers class
    config: str  # its config class
    settings: dict[str, Any]
    inputs: str  # "text" (input_ids, attention_mask) or "image" (pixel_values)
    attention: str  # "eager" or "sdpa"
    dynamo: bool  # torch.onnx.export(dynamo=...)
    blocks: int  # attention blocks in the model
    #: Text models only: export input_ids and attention_mask with dynamic axes "batch" (1 to 64) and "sequence"
    #: (2 to 64), for the dynamic-shape tests (the others are exported with static shapes).
    dynamic: bool = False


_GPT2 = {"vocab_size": 1000, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 64, "n_inner": 128,
         "use_cache": False, "bos_token_id": 0, "eos_token_id": 0}
_LLAMA = {"vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
          "num_key_value_heads": 2, "intermediate_size": 128, "max_position_embeddings": 64, "use_cache": False,
          "hidden_act": "silu", "rms_norm_eps": 1e-6}
_BERT = {"vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 128, "max_position_embeddings": 64, "type_vocab_size": 2}
EXPORTS = (
    Export("bert", "BertModel", "BertConfig", _BERT, "text", "eager", True, 2),
    Export("bert_sdpa", "BertModel", "BertConfig", _BERT, "text", "sdpa", True, 2),
    Export("bert_dynamic", "BertModel", "BertConfig", _BERT, "text", "eager", True, 2, dynamic=True),
    Export("gpt2", "GPT2Model", "GPT2Config", _GPT2, "text", "eager", True, 2),
    Export("gpt2_sdpa", "GPT2Model", "GPT2Config", _GPT2, "text", "sdpa", True, 2),
    Export("llama", "LlamaModel", "LlamaConfig", _LLAMA, "text", "eager", True, 2),
    Export("llama_sdpa", "LlamaModel", "LlamaConfig", _LLAMA, "text", "sdpa", True, 2),
    Export("swin", "SwinModel", "SwinConfig",
           {"image_size": 32, "patch_size": 4, "num_channels": 3, "embed_dim": 32, "depths": [2, 2],
            "num_heads": [2, 4], "window_size": 4, "mlp_ratio": 2.0}, "image", "eager", True, 4),
    Export("vit", "ViTModel", "ViTConfig",
           {"image_size": 32, "patch_size": 8, "num_channels": 3, "hidden_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 128}, "image", "eager", True, 2),
)


def _tools() -> tuple[Any, Any]:
    """torch and transformers, imported only here: the project does not depend on them (and mypy, where CI has
    neither installed, sees Any)."""
    return importlib.import_module("torch"), importlib.import_module("transformers")


def randomize(model: Any) -> None:
    """Every parameter drawn again from the seeded generator: transformers initializes biases to 0 and norms to
    (1, 0), which would leave the bias Adds and the norms' affine steps untested (and the exporter's optimizer
    merges equal initializers). Matrices get N(0, 1/fan_in), 1-D weights 1 + N(0, 0.1^2), 1-D biases N(0, 0.1^2)."""
    torch, _ = _tools()
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=p.dtype)
            if p.ndim >= 2:
                p.copy_(noise / (p.numel() // p.shape[0]) ** 0.5)
            elif name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)


def export(spec: Export) -> str:
    torch, transformers = _tools()

    torch.manual_seed(SEED)
    config = getattr(transformers, spec.config)(**spec.settings, attn_implementation=spec.attention)
    model = getattr(transformers, spec.model)(config).eval()
    randomize(model)

    def forward(self: Any, *args: Any) -> Any:
        """The model's last hidden state only: one output, no pooler, no cache."""
        if spec.inputs == "image":
            return self.inner(pixel_values=args[0]).last_hidden_state
        return self.inner(input_ids=args[0], attention_mask=args[1]).last_hidden_state

    wrapper = type("LastHidden", (torch.nn.Module,), {"forward": forward})().eval()
    wrapper.inner = model

    generator = torch.Generator().manual_seed(SEED)
    if spec.inputs == "image":
        args: tuple[Any, ...] = (torch.randn(BATCH, 3, 32, 32, generator=generator),)
        names = ["pixel_values"]
    else:
        ids = torch.randint(0, 1000, (BATCH, SEQ), generator=generator)
        mask = torch.ones(BATCH, SEQ, dtype=torch.int64)
        mask[1, SEQ - 4:] = 0  # a padded row, so the exporter cannot treat the mask as all ones
        args, names = (ids, mask), ["input_ids", "attention_mask"]
    path = path_of(spec)
    with torch.no_grad():
        dynamic: dict[str, Any] = {}
        if spec.dynamic:
            axes = {0: torch.export.Dim("batch", min=1, max=64), 1: torch.export.Dim("sequence", min=2, max=64)}
            dynamic = {"dynamic_shapes": ((axes, axes),)}  # forward(*args): one positional group
        torch.onnx.export(wrapper, args, path, input_names=names, output_names=["last_hidden_state"],
                          opset_version=OPSET, dynamo=spec.dynamo, external_data=False, **dynamic)
    loaded = strip(onnx.load(path))
    onnx.checker.check_model(loaded, full_check=True)
    onnx.save(loaded, path)  # one file, no external data
    return path


def path_of(spec: Export) -> str:
    return os.path.join(OUT_DYNAMIC if spec.dynamic else OUT, f"{spec.name}.onnx")


def strip(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without the exporter's per-node metadata and doc strings: stack traces naming this machine's paths
    and line numbers (the files would change with every edit of this script), a third of their size."""
    graph = model.graph
    for item in (*graph.node, *graph.input, *graph.output, *graph.value_info, *graph.initializer):
        del item.metadata_props[:]
        item.doc_string = ""
    del graph.metadata_props[:]
    del model.metadata_props[:]
    graph.doc_string = model.doc_string = ""
    return model


def readme(sizes: dict[str, int]) -> str:
    torch, transformers = _tools()

    lines = ["# Small transformer exports (test models)", "",
             "Made by `python tests/models/make_transformers.py` (read its docstring); do not edit by hand. Random",
             f"weights from seed {SEED}, static shapes, batch {BATCH}, sequence {SEQ} (text) or a 32x32 image;",
             "`../dynamic/bert_dynamic.onnx` with dynamic axes `batch` (1 to 64) and `sequence` (2 to 64) instead.",
             f"torch {torch.__version__}, transformers {transformers.__version__}, onnxscript "
             f"{importlib.import_module('onnxscript').__version__}, onnx {onnx.__version__}, opset {OPSET}; the "
             "exporter's per-node metadata (stack traces) stripped.",
             "Text models take `input_ids` [2, 16] (int64, < 1000) and `attention_mask` [2, 16] (int64 0/1); vision "
             "models `pixel_values` [2, 3, 32, 32]. One output, `last_hidden_state`.", "",
             "| file | model | attention | exporter | attention blocks | bytes | config |",
             "|---|---|---|---|---|---|---|"]
    for spec in EXPORTS:
        lines.append(f"| {os.path.relpath(path_of(spec), OUT)} | {spec.model} | {spec.attention} | "
                     f"{'dynamo' if spec.dynamo else 'TorchScript'} | {spec.blocks} | {sizes[spec.name]} | "
                     f"`{json.dumps(spec.settings, sort_keys=True)}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(OUT_DYNAMIC, exist_ok=True)
    wanted = set(argv) or {spec.name for spec in EXPORTS}
    for spec in EXPORTS:
        if spec.name in wanted:
            path = export(spec)
            print(f"{path}: {os.path.getsize(path)} bytes")
    sizes = {spec.name: os.path.getsize(path_of(spec)) for spec in EXPORTS if os.path.exists(path_of(spec))}
    if len(sizes) == len(EXPORTS):
        with open(os.path.join(OUT, "README.md"), "w", encoding="utf-8") as f:
            f.write(readme(sizes))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
