"""Procedures over the trainer: searches that span several training phases (docs/architecture.md).

- :mod:`sparsetrain.procedures.gems`: Rare Gems / Gem-Miner (``hc``, ``hc_iter``) and
  edge-popup (``ep``, ``global_ep``): a score search on frozen weights, then
  fine-tuning under the found mask (docs/algorithms.md, "Rare Gems / Gem-Miner and edge-popup").

Submodules are imported on use, so ``import sparsetrain`` stays light::

    from sparsetrain.procedures.gems import load_gems_config, run_gems
    summary = run_gems(load_gems_config("gems_mnist1d"), "runs/gems")
"""
