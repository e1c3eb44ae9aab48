"""Drop-in replacements for other libraries' APIs."""
from sparsetrain.compat.rigl_torch import RigLScheduler  # noqa: F401  (rigl-torch drop-in)
