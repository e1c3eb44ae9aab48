"""sparsetrain: sparse neural-network training for PyTorch.

One line in your loop::

    sparsifier = sparsetrain.attach(model, optimizer, "granet", density=0.1, total_steps=epochs * len(loader))
"""

from sparsetrain.engine import Sparsifier, attach
from sparsetrain.errors import SparsetrainError
from sparsetrain.methods import Method, create_method, list_methods, method_info, register_method

__version__ = "0.1.0"

__all__ = ["Method", "RigLScheduler", "Sparsifier", "SparsetrainError", "__version__", "attach",
           "create_method", "list_methods", "method_info", "register_method"]


def __getattr__(name: str):
    if name == "RigLScheduler":  # lazy: keeps `import sparsetrain` light
        from sparsetrain.compat.rigl_torch import RigLScheduler
        return RigLScheduler
    if name == "compact":  # lazy: needs torch-pruning (the structured extra)
        from sparsetrain.deploy.compact import compact
        return compact
    raise AttributeError(f"module 'sparsetrain' has no attribute {name!r}")
