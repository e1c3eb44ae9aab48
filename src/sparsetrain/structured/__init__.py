"""Channel-level structure: the channel dependency graph (Chase, ALGORITHMS.md 5.1) and channel removal."""
