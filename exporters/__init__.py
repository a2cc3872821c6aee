"""Training and ONNX export for lida-plugin encoders: the only package that imports torch."""
