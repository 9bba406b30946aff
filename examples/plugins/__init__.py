"""An example plugin (``scaled_tanh``) and a helper that makes an ONNX model using it (``make_model``)."""
