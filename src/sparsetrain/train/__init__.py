"""The reference trainer for the CLI and benchmarks (DESIGN section 3): data, models, loop.

Not imported by the core library: ``import sparsetrain`` stays light.
"""
