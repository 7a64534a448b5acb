"""The engines a trained model can run on (`--backend`), by name: torch-free, for the
command line. What each one does: predictor.py."""

BACKENDS = ("auto", "native", "torch", "onnxruntime", "hybrid")
