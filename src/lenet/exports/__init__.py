"""One model in every framework: a trained LeNet as ONNX (to_onnx.py), a Keras `.keras`
file or Flax parameters (safetensors) with the module that reads them, each verified on
the whole test split against PyTorch's logits (`lenet export RUN --format onnx|keras|flax`).

`plan` reads the PyTorch network into framework-free numpy layers once; `to_keras` and
`to_flax` build from that plan. Imported only on use: each needs its framework's extra.
"""
