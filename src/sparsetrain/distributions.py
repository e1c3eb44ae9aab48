"""Layer-wise density distributions: ``(shapes, density) -> {name: density}``.

Implements docs/algorithms.md, "Sparse initialisation and layer densities" (uniform, ER, ERK with its dense-layer
loop), the GMP_uniform classifier rule of section 2.2 and Smart Ratio
(section 6). ``global`` means
"no per-layer budget": the init and the pruning ops then rank all layers
together, so only the overall count is fixed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from sparsetrain.core.registry import Registry
from sparsetrain.errors import check_density, unknown_choice

Shapes = dict[str, torch.Size]
Distribution = Callable[..., dict[str, float]]


def uniform(shapes: Shapes, density: float) -> dict[str, float]:
    """Every layer at ``density``.

    Example:
        >>> uniform({"a": torch.Size([4, 4]), "b": torch.Size([2, 4])}, 0.5)
        {'a': 0.5, 'b': 0.5}
    """
    check_density(density)
    return {name: density for name in shapes}


def _raw_scores(shapes: Shapes, kernel: bool, power: float) -> dict[str, float]:
    raw = {}
    for name, shape in shapes.items():
        dims = list(shape) if kernel else list(shape)[:2]
        raw[name] = (sum(dims) / math.prod(dims)) ** power
    return raw


def erk(shapes: Shapes, density: float, power: float = 1.0, kernel: bool = True) -> dict[str, float]:
    """Erdős–Rényi-Kernel densities, the exact loop of docs/algorithms.md, "Sparse initialisation and layer densities".

    raw_l = (sum(dims) / prod(dims)) ** power. Layers whose density would
    exceed 1 are made dense (all layers sharing the maximal raw score at once)
    and epsilon is solved again, so sum(density_l * N_l) == density * sum(N_l).

    Example (hand-worked, tests/test_distributions.py):
        >>> d = erk({"conv": torch.Size([4, 2, 3, 3]), "fc": torch.Size([10, 4])}, 0.5)
        >>> round(d["conv"], 4), round(d["fc"], 4)  # eps = 56 / 26
        (0.359, 0.7538)
    """
    check_density(density)
    raw = _raw_scores(shapes, kernel, power)
    numel = {name: math.prod(shape) for name, shape in shapes.items()}
    dense: set[str] = set()
    while True:
        sparse = [n for n in shapes if n not in dense]
        if not sparse:
            break
        budget = sum(density * numel[n] for n in sparse) - sum((1 - density) * numel[n] for n in dense)
        divisor = sum(raw[n] * numel[n] for n in sparse)
        eps = budget / divisor
        top = max(raw[n] for n in sparse)
        if eps * top > 1.0:
            dense.update(n for n in sparse if raw[n] == top)
            continue
        break
    return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}


def er(shapes: Shapes, density: float) -> dict[str, float]:
    """Erdős–Rényi (SET): ERK restricted to the two leading dims (no kernel term)."""
    return erk(shapes, density, kernel=False)


def global_(shapes: Shapes, density: float) -> dict[str, float]:
    """Placeholder densities for ``global``: every layer at ``density`` until ranked globally."""
    check_density(density)
    return {name: density for name in shapes}


def uniform_dense_classifier(shapes: Shapes, density: float, classifier: str | None = None,
                             classifier_density: float = 0.2, threshold: float = 0.2) -> dict[str, float]:
    """GMP_uniform (docs/algorithms.md, "GMP", Gale et al.): at density <= 0.2 the
    classifier is held at 0.2 and the other layers share the rest uniformly so
    the total still matches.

    Example:
        >>> s = {"conv": torch.Size([900]), "fc": torch.Size([100])}
        >>> {k: round(v, 4) for k, v in uniform_dense_classifier(s, 0.1, "fc").items()}
        {'conv': 0.0889, 'fc': 0.2}
    """
    check_density(density)
    out = {name: density for name in shapes}
    if classifier is None or classifier not in shapes or density > threshold or len(shapes) == 1:
        return out
    numel = {name: math.prod(shape) for name, shape in shapes.items()}
    total, n_fc = sum(numel.values()), numel[classifier]
    rest = (total * density - classifier_density * n_fc) / (total - n_fc)
    if rest <= 0.0:  # the classifier alone would take the whole budget: stay uniform
        return out
    out = {name: rest for name in shapes}
    out[classifier] = classifier_density
    return out


def smart_ratio(shapes: Shapes, density: float, variant: str = "resnet",
                linear_keep: float = 0.3) -> dict[str, float]:
    """Smart Ratio layer densities (Su et al. 2020; Rare Gems ``SmartRatio.py``; docs/algorithms.md, "Sparse
    initialisation and layer densities").

    Layers are numbered l = 1..L in model order. Every layer but the last (the
    classifier) gets a raw keep ratio p_l = (L-l+1)^2 + (L-l+1) (``variant``
    ``"resnet"``) or that divided by l^2 (``"vgg"``); the classifier is fixed
    at ``linear_keep``. The raw ratios are scaled so the total matches
    ``density``; a ratio above 1 is set to 1 and its surplus goes to the next
    layers (in order) that still have room. Choosing the variant: the shapes
    alone do not tell a ResNet from a VGG, so it is an argument (the
    ``smart_ratio_vgg`` distribution name selects ``"vgg"``); Rare Gems uses
    the ResNet form for every architecture that is not a VGG.

    Differences from the original, on purpose: only the last layer is the
    fixed "linear layer" (the original fixes every ``nn.Linear``, which for an
    MLP would leave nothing to scale); densities stay exact floats (the
    original truncates the surplus with ``int``); and if the classifier at
    ``linear_keep`` alone would use the whole budget, all layers, the
    classifier included, are scaled together so the total still matches.

    Example (hand-worked, tests/test_init_pruning.py):
        >>> s = {"a": torch.Size([10, 10]), "b": torch.Size([20, 10]), "fc": torch.Size([5, 10])}
        >>> {k: round(v, 4) for k, v in smart_ratio(s, 0.2).items()}  # scale = 55 / 2400
        {'a': 0.275, 'b': 0.1375, 'fc': 0.3}
    """
    check_density(density)
    if variant not in ("resnet", "vgg"):
        raise unknown_choice("smart_ratio variant", variant, ["resnet", "vgg"])
    names = list(shapes)
    numel = [math.prod(shapes[n]) for n in names]
    if len(names) == 1:
        return {names[0]: density}
    n_layers = len(names)
    depth_left = [n_layers - i for i in range(n_layers)]  # L - l + 1 for l = 1..L
    raw = [float(k * k + k) for k in depth_left]
    if variant == "vgg":
        raw = [r / (i * i) for i, r in enumerate(raw, start=1)]
    budget = density * sum(numel)
    fixed = linear_keep * numel[-1]
    if fixed < budget:
        raw[-1] = linear_keep
        scale = (budget - fixed) / sum(r * m for r, m in zip(raw[:-1], numel[:-1], strict=True))
        keep = [scale * r for r in raw[:-1]] + [linear_keep]
    else:  # the classifier alone would take the whole budget: scale every layer together
        raw[-1] = linear_keep
        scale = budget / sum(r * m for r, m in zip(raw, numel, strict=True))
        keep = [scale * r for r in raw]
    surplus = 0.0
    for i in range(n_layers):  # model order: the classifier, last, takes what is left
        if keep[i] > 1.0:
            surplus += (keep[i] - 1.0) * numel[i]
            keep[i] = 1.0
        elif surplus > 0.0:
            take = min(surplus, (1.0 - keep[i]) * numel[i])
            keep[i] += take / numel[i]
            surplus -= take
    return {n: min(1.0, k) for n, k in zip(names, keep, strict=True)}


def smart_ratio_vgg(shapes: Shapes, density: float, linear_keep: float = 0.3) -> dict[str, float]:
    """Smart Ratio with the VGG form p_l = ((L-l+1)^2 + (L-l+1)) / l^2 (see :func:`smart_ratio`)."""
    return smart_ratio(shapes, density, variant="vgg", linear_keep=linear_keep)


DISTRIBUTIONS: Registry[Distribution] = Registry("distribution")
for _name, _fn in (("uniform", uniform), ("er", er), ("erk", erk), ("global", global_), ("smart_ratio", smart_ratio),
                   ("smart_ratio_vgg", smart_ratio_vgg)):
    DISTRIBUTIONS.register(_name, _fn)


def layer_densities(name: str, shapes: Shapes, density: float, dense_first: bool = False,
                    **kwargs) -> dict[str, float]:
    """Look up a distribution by name and apply it.

    ``dense_first`` keeps the first layer dense afterwards (RigL's uniform
    convention, rigl-torch always; docs/algorithms.md, "Sparse initialisation and layer densities" and "rigl-torch");
    the other
    layers keep their densities, so the overall density rises slightly.

    Example:
        >>> layer_densities("uniform", {"a": torch.Size([3, 3]), "b": torch.Size([3])}, 0.5, dense_first=True)
        {'a': 1.0, 'b': 0.5}
    """
    out = DISTRIBUTIONS.get(name.lower())(shapes, density, **kwargs)
    if dense_first and len(out) > 1:
        out[next(iter(out))] = 1.0
    return out
