"""LeNet-5's fused CPU kernel and the code that prepares models for it.

`lenet5.c` is compiled on first use with the machine's C compiler and cached
(`build.py`, `toolchain.py`); `lenet5.py` binds it (autograd, `Blocks`: the conv
blocks it reads), `network.py` runs a whole network for one image, `guard.py`
keeps it only where it measured faster, and `fastpath.py` lays a model out for
its device (`prepare_model`), giving a LeNet the kernel by name.

Nothing here is required: when no compiler is found, a build fails (one warning
line says why) or LENET_NATIVE=0 is set, models run PyTorch's layers.
"""
