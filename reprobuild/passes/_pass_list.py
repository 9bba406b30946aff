"""Every graph pass, listed explicitly (name, version, function)."""

from __future__ import annotations

from reprobuild.passes import (
    fold,
    fold_batchnorm,
    fuse_attention,
    fuse_conv_epilogue,
    fuse_elementwise,
    fuse_gelu,
    fuse_gemm_epilogue,
    fuse_layernorm,
    fuse_rmsnorm,
    fuse_roll,
    precision,
    simplify,
)
from reprobuild.passes.base import Pass

PASS_LIST = (
    Pass("eliminate_dead_code", simplify.VERSION, simplify.eliminate_dead_code,
         "remove layers whose outputs reach no network output, and constants nothing reads"),
    Pass("eliminate_identities", simplify.VERSION, simplify.eliminate_identities,
         "remove layers that give their input back unchanged (Identity, same-type Cast, same-shape Expand, views "
         "back to their shape)"),
    Pass("fold_batchnorm", fold_batchnorm.VERSION, fold_batchnorm.fold_batchnorm,
         "fold an inference BatchNormalization into the constant weights of the Conv or Gemm before it"),
    Pass("fold_constants", fold.VERSION, fold.fold_constants,
         "compute layers whose inputs are all constants with their op's reference"),
    Pass("fuse_attention", fuse_attention.VERSION, fuse_attention.fuse_attention,
         "recognise scaled-dot-product attention (MatMul, scale, masks, Softmax, MatMul) as one FusedAttention layer"),
    Pass("fuse_conv_epilogue", fuse_conv_epilogue.VERSION, fuse_conv_epilogue.fuse_conv_epilogue,
         "fuse a residual Add and an activation (Relu, Clip, Sigmoid, SiLU) into the Conv before them"),
    Pass("fuse_gemm_epilogue", fuse_gemm_epilogue.VERSION, fuse_gemm_epilogue.fuse_gemm_epilogue,
         "fuse a bias Add, a residual Add and an activation into the MatMul (or Gemm) before them"),
    Pass("fuse_elementwise", fuse_elementwise.VERSION, fuse_elementwise.fuse_elementwise, "fuse elementwise chains"),
    Pass("fuse_gelu", fuse_gelu.VERSION, fuse_gelu.fuse_gelu,
         "recognise x * 0.5 * (1 + erf(x / sqrt(2))) and its tanh approximation as one Gelu layer"),
    Pass("fuse_layer_normalization", fuse_layernorm.VERSION, fuse_layernorm.fuse_layer_normalization,
         "recognise the ReduceMean/Sub/Pow/Sqrt/Div pattern of layer normalization as one layer"),
    Pass("fuse_rms_normalization", fuse_rmsnorm.VERSION, fuse_rmsnorm.fuse_rms_normalization,
         "recognise root-mean-square normalization (Pow/ReduceMean/Add/Sqrt/Reciprocal or Div, times a weight: "
         "Llama's and T5's RMSNorm) as one RMSNormalization layer"),
    Pass("fuse_roll", fuse_roll.VERSION, fuse_roll.fuse_roll,
         "recognise a cyclic shift (torch.roll: Concat of two Slices of one tensor) as one Gather with constant "
         "indices"),
    Pass("reduce_precision_fp16", precision.VERSION, precision.reduce_precision_fp16,
         "run float32 layers in float16, casting at the network's inputs and outputs (--precision fp16 adds it)"),
    Pass("reduce_precision_bf16", precision.VERSION, precision.reduce_precision_bf16,
         "run float32 layers in bfloat16, casting at the network's inputs and outputs (--precision bf16 adds it)"),
)
