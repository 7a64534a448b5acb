"""Native CPU kernels, compiled on first use with the machine's C compiler and cached.

Nothing here is required: when no compiler is found, a build fails, or
LENET_NATIVE=0 is set, `load` returns None and callers keep PyTorch's kernels.
"""
