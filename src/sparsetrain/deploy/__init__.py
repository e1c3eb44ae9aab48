"""Making a sparse model physically smaller and faster, and shipping it.

- :mod:`~sparsetrain.deploy.compact`: remove the channels (and transformer MLP
  units) a run emptied, with outputs equal to the masked model's; width specs
  (:mod:`~sparsetrain.deploy.widths`) rebuild the smaller model;
- :mod:`~sparsetrain.deploy.shrink`: the same surgery applied while training
  (``attach(..., shrink=True)``), optimizer and sparsifier state included;
- :mod:`~sparsetrain.deploy.checkpoint`: sparse safetensors checkpoints;
  :mod:`~sparsetrain.deploy.onnx`: ONNX export;
- :mod:`~sparsetrain.deploy.inference`: dense, CSR or 2:4 per layer, whichever
  is measured fastest; :mod:`~sparsetrain.deploy.bench`: the latency bench.

Which channels may go together is :mod:`sparsetrain.core.graph` (torch-pruning's
dependency graph). See docs/algorithms.md, "Chase" and the guide "Make my
model faster".
"""
