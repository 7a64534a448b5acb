"""`lenet export RUN --format flax`: the parameters as safetensors, and the Flax module that
reads them (exports/flax_module.py, copied beside them), verified against PyTorch."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

import jax
import numpy as np
from safetensors.numpy import save_file

from ..errors import LenetError
from ..models import LeNet
from . import flax_module
from .agreement import Agreement, compare
from .plan import plan

MODULE_NAME = "lenet_flax.py"  # written beside the .safetensors file


def export_flax(model: LeNet, classes: list[str], path: str | Path) -> tuple[Path, Path]:
    """Write `path` (.safetensors: 'conv1.kernel', ... in Flax's layouts, the architecture
    in its metadata) and lenet_flax.py beside it; return both paths."""
    path = Path(path)
    config = model.config
    tensors = {f"{layer.name}.{key}": np.ascontiguousarray(value)
               for layer in plan(model) for key, value in layer.params.items()}
    metadata = {"config": json.dumps({
        "channels": config.channels, "kernel_sizes": config.kernel_sizes,
        "paddings": config.paddings, "dense": config.dense, "num_classes": config.num_classes,
        "activation": config.activation, "pool": config.pool, "pool_size": config.pool_size,
        "input_size": config.input_size, "in_channels": config.in_channels,
        "classes": list(classes)}), "format": "flax", "layout": "NHWC"}
    module_path = path.with_name(MODULE_NAME)
    try:
        save_file(tensors, str(path), metadata=metadata)
        shutil.copyfile(flax_module.__file__, module_path)
    except OSError as e:
        raise LenetError(f"cannot write {path}: {e.strerror or e}") from e
    return path, module_path


def load_written_module(module_path: Path) -> ModuleType:
    """Import the lenet_flax.py that was written, as a user would (not lenet's own copy)."""
    spec = importlib.util.spec_from_file_location("lenet_flax_export", module_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # flax's dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def flax_logits(path: Path, module_path: Path, images: np.ndarray) -> np.ndarray:
    """(N, classes) logits of the written files for (N, H, W, C) images, by batches."""
    reader = load_written_module(module_path)
    module, variables = reader.load(path)
    apply = jax.jit(module.apply)
    return np.concatenate([np.asarray(apply(variables, images[i:i + 2048]))
                           for i in range(0, len(images), 2048)])


def verify_flax(path: Path, module_path: Path, images: np.ndarray, torch_logits: np.ndarray,
                labels: np.ndarray) -> Agreement:
    """Compare the files' logits for (N, H, W, C) `images` with PyTorch's."""
    return compare(flax_logits(path, module_path, images), torch_logits, labels)
