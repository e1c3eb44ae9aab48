"""The reference trainer for the CLI and benchmarks (docs/architecture.md): data, models, loop.

Not imported by the core library: ``import sparsetrain`` stays light.
"""
