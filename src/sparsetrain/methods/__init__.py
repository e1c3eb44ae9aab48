"""Registered methods, one short file per family."""

from sparsetrain.methods import chase, dst, gmp, granet, init_pruning, mest, prune  # noqa: F401  (registration)
from sparsetrain.methods.registry import (
                                          Method,
                                          create_method,
                                          list_methods,
                                          method_info,
                                          method_signature,
                                          register_method,
                                          unregister_method,
)

__all__ = ["Method", "create_method", "list_methods", "method_info", "method_signature", "register_method",
           "unregister_method"]
