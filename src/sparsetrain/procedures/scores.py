"""Score machinery of Rare Gems / Gem-Miner and edge-popup (docs/algorithms.md, "Rare Gems / Gem-Miner and edge-popup").

A :class:`ScoreSearch` keeps, next to a *plain* model, one trainable score
tensor ``p`` and one boolean ``flag`` per prunable weight. The weights stay
frozen; the forward pass replaces each prunable weight ``w`` by ``w * m(p)``
through :func:`torch.func.functional_call`, so the model is never wrapped,
re-classed or re-parametrised (docs/concepts.md, "Guarantees"): when the search is over,
the model is exactly the module it was, plus a mask dict.

The mask ``m(p)`` per algorithm (Sreenivasan et al. 2022, "Rare Gems"; Ramanujan
et al. 2020, "What's hidden in a randomly weighted network", for edge-popup):

- ``hc`` / ``hc_iter`` quantised (Gem-Miner): ``m = 1[p > 0.5] * flag``, with a
  straight-through estimator (dL/dp = dL/dm where the flag is on);
- ``hc`` / ``hc_iter`` continuous (``quantized=False``): ``m = p * flag``;
- ``ep``: per-layer top-k of ``|p|`` (k = round(d N_l)), straight-through;
- ``global_ep``: one global top-k of ``|p|``, straight-through.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> s = ScoreSearch.create(net, "hc_iter", 0.5, generator=torch.Generator().manual_seed(0))
    >>> s(torch.randn(3, 4)).shape, sorted(s.scores)
    (torch.Size([3, 2]), ['0.weight', '2.weight'])
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call

from sparsetrain.core.layout import fan_in
from sparsetrain.core.selection import select
from sparsetrain.core.topk import exact_count, global_topk, topk_mask
from sparsetrain.errors import SparsetrainError, unknown_choice

ALGOS = ("hc", "hc_iter", "ep", "global_ep")
SCORE_INITS = ("unif", "half", "bern", "bimodal", "skew", "kaiming_uniform")
REGULARIZERS = ("none", "L2", "L1", "L1_L2", "var_red_1", "var_red_2", "bin_entropy")
ROUNDINGS = ("naive", "prob", "all_ones")
RELU_GAIN = math.sqrt(2.0)


def signed_constant_(weight: Tensor, generator: torch.Generator, fan_scale: float = 1.0, axis: int = 0) -> Tensor:
    """Rare Gems' frozen weights: ``sign(w_kaiming) * sqrt(2) / sqrt(fan_in * fan_scale)``.
    See docs/algorithms.md, "Rare Gems / Gem-Miner and edge-popup".

    ``fan_scale`` is 1 by default; ``scale_fan`` passes ``1 - prune_rate`` as
    the original does (``fan * (1 - prune_rate)``; its ``prune_rate`` is the
    fraction that *remains* for edge-popup, and 0.5 unless set for Gem-Miner).
    ``axis`` is the weight's out axis (1 for a Hugging Face Conv1D, :mod:`sparsetrain.core.layout`).

    Example:
        >>> w = signed_constant_(torch.empty(3, 8), torch.Generator().manual_seed(0))
        >>> sorted(set(w.abs().flatten().tolist())) == [0.5]
        True
    """
    signs = torch.randn(weight.shape, generator=generator).sign()
    signs[signs == 0] = 1.0  # a sign is never 0 (probability ~0, but keep the constant exact)
    with torch.no_grad():
        weight.copy_(signs * (RELU_GAIN / math.sqrt(fan_in(weight.shape, axis) * fan_scale)))
    return weight


def kaiming_normal_(weight: Tensor, generator: torch.Generator, axis: int = 0) -> Tensor:
    """Kaiming normal (fan_in, ReLU) from ``generator``: the sanity check's weight re-init (``axis``: out axis)."""
    with torch.no_grad():
        scale = RELU_GAIN / math.sqrt(fan_in(weight.shape, axis))
        weight.copy_(torch.randn(weight.shape, generator=generator) * scale)
    return weight


def _beta(shape: torch.Size, a: float, b: float, generator: torch.Generator) -> Tensor:
    # torch's Beta sampler takes no generator: draw its seed from ours so runs repeat exactly
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.distributions.Beta(torch.tensor(a), torch.tensor(b)).sample(shape)


def init_scores(weight: Tensor, kind: str, generator: torch.Generator, axis: int = 0) -> Tensor:
    """Initial scores shaped like ``weight`` (docs/algorithms.md, "Rare Gems / Gem-Miner and edge-popup",
    ``score_init``).

    ``unif`` U[0, 1]; ``half`` 0.5; ``bern`` Bernoulli(0.5); ``bimodal``
    Beta(0.1, 0.1); ``skew`` Beta(1, 5); ``kaiming_uniform`` U(-b, b) with
    b = 1 / sqrt(fan_in): edge-popup's scores, torch's ``kaiming_uniform_(a=sqrt(5))``
    (the Linear / Conv default; ``axis`` is the weight's out axis). Only |p| ranks weights there, but the scale
    sets how far one step of the learning rate and weight decay moves a score.

    Example:
        >>> init_scores(torch.empty(2, 3), "half", torch.Generator()).tolist()
        [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]
    """
    shape = weight.shape
    if kind == "unif":
        return torch.rand(shape, generator=generator)
    if kind == "half":
        return torch.full(shape, 0.5)
    if kind == "bern":
        return torch.bernoulli(torch.full(shape, 0.5), generator=generator)
    if kind == "bimodal":
        return _beta(shape, 0.1, 0.1, generator)
    if kind == "skew":
        return _beta(shape, 1.0, 5.0, generator)
    if kind == "kaiming_uniform":
        bound = 1.0 / math.sqrt(fan_in(weight.shape, axis))
        return (torch.rand(shape, generator=generator) * 2 - 1) * bound
    raise unknown_choice("score_init", kind, SCORE_INITS)


def straight_through(hard: Tensor, scores: Tensor) -> Tensor:
    """``hard`` in the forward pass, identity gradient to ``scores`` in the backward pass.

    ``scores - scores.detach()`` is exactly 0.0, so the value is ``hard`` to the bit.

    Example:
        >>> p = torch.tensor([0.2, 0.7], requires_grad=True)
        >>> m = straight_through((p > 0.5).float(), p); (m * torch.tensor([3.0, 5.0])).sum().backward()
        >>> m.tolist(), p.grad.tolist()
        ([0.0, 1.0], [3.0, 5.0])
    """
    return hard.to(scores.dtype) + (scores - scores.detach())


def regularization(kind: str, scores: list[Tensor], weights: list[Tensor], alpha: float = 1.0,
                   alpha_prime: float = 1.0) -> Tensor:
    """The score regulariser summed over every score, flagged or not.
    See docs/algorithms.md, "Rare Gems / Gem-Miner and edge-popup".

    ``L2`` sum p^2; ``L1`` sum |p|; ``L1_L2`` sum |p| + p^2; ``var_red_1`` sum
    p^alpha (1-p)^alpha'; ``var_red_2`` sum w^2 p (1-p); ``bin_entropy`` sum
    -p log p - (1-p) log(1-p). Multiply by lambda outside.

    Example:
        >>> float(regularization("L2", [torch.tensor([0.5, 1.0])], [torch.ones(2)]))
        1.25
    """
    if kind == "none":
        return torch.zeros(())
    terms = []
    for p, w in zip(scores, weights, strict=True):
        if kind == "L2":
            terms.append(p.pow(2).sum())
        elif kind == "L1":
            terms.append(p.abs().sum())
        elif kind == "L1_L2":
            terms.append(p.abs().sum() + p.pow(2).sum())
        elif kind == "var_red_1":
            q = p.clamp(0, 1)
            terms.append((q.pow(alpha) * (1 - q).pow(alpha_prime)).sum())
        elif kind == "var_red_2":
            terms.append((w.detach().pow(2) * p * (1 - p)).sum())
        elif kind == "bin_entropy":
            q = p.clamp(1e-6, 1 - 1e-6)
            terms.append(-(q * q.log() + (1 - q) * (1 - q).log()).sum())
        else:
            raise unknown_choice("regularization", kind, REGULARIZERS)
    return torch.stack(terms).sum()


@dataclass
class ScoreSearch:
    """Scores and flags over the prunable weights of a plain model.
    See docs/algorithms.md, "Rare Gems / Gem-Miner and edge-popup".

    Attributes:
        model: the user's module, untouched apart from frozen ``requires_grad``.
        weights: ``{name: the model's own weight Parameter}`` (frozen).
        scores: ``{name: trainable score tensor}`` (the only trainable tensors).
        flags: ``{name: bool}``, True = not yet pruned by thresholding.
        algo: one of :data:`ALGOS`.
        density: fraction kept (edge-popup's top-k; Gem-Miner's target).
        quantized: Gem-Miner's ``hc_quantized`` (False: continuous ``p * flag``).
        threshold: the quantisation threshold (0.5).
        search_only: layers scored and masked by their own scores during the
            search but never thresholded, not counted in the target and dense
            when the weights are fine-tuned (the original's shortcut convs:
            ``SubnetConv`` layers outside its ``get_layers``).
    """

    model: nn.Module
    weights: dict[str, nn.Parameter]
    scores: dict[str, Tensor]
    flags: dict[str, Tensor]
    algo: str
    density: float
    quantized: bool = True
    threshold: float = 0.5
    _frozen: dict[str, bool] = field(default_factory=dict, repr=False)
    search_only: tuple[str, ...] = ()

    @classmethod
    def create(cls, model: nn.Module, algo: str, density: float, *, score_init: str = "unif",
               generator: torch.Generator, quantized: bool = True, threshold: float = 0.5,
               exclude: tuple[str, ...] = (), search_only: tuple[str, ...] = ()) -> ScoreSearch:
        """Freeze every parameter of ``model`` and give each conv / linear weight a score tensor.

        ``search_only`` are globs over weight names for :attr:`search_only`.
        """
        if algo not in ALGOS:
            raise unknown_choice("algo", algo, ALGOS)
        chosen = select(model, exclude=exclude)
        weights = {n: s.param for n, s in chosen.items()}
        frozen = {n: p.requires_grad for n, p in model.named_parameters()}
        for p in model.parameters():
            p.requires_grad_(False)
        scores = {n: init_scores(w, score_init, generator, chosen[n].out_axis).to(w.device).requires_grad_(True)
                  for n, w in weights.items()}
        flags = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
        only = tuple(n for n in weights if any(fnmatch.fnmatchcase(n, g) for g in search_only))
        if len(only) == len(weights):
            raise SparsetrainError(f"search_only {list(search_only)} matches every prunable layer: nothing is left "
                                   "to prune.")
        return cls(model, weights, scores, flags, algo, density, quantized, threshold, frozen, only)

    def prunable(self, masks: dict[str, Tensor]) -> dict[str, Tensor]:
        """``masks`` without the :attr:`search_only` layers (the ticket: those stay dense)."""
        return {n: m for n, m in masks.items() if n not in self.search_only}

    # ---------------------------------------------------------------- forward
    def soft_masks(self) -> dict[str, Tensor]:
        """The differentiable masks of the forward pass (values exactly 0/1 unless continuous ``hc``)."""
        # edge-popup ranks |p|, so its gradient reaches p through |p| (sign(p) * dL/dm)
        if self.algo == "ep":
            return {n: straight_through(topk_mask(p.detach().abs(), exact_count(self.density, p.numel())), p.abs())
                    for n, p in self.scores.items()}
        if self.algo == "global_ep":
            hard = global_topk({n: p.detach().abs() for n, p in self.scores.items()},
                               exact_count(self.density, sum(p.numel() for p in self.scores.values())))
            return {n: straight_through(hard[n], p.abs()) for n, p in self.scores.items()}
        if not self.quantized:
            return {n: p * self.flags[n] for n, p in self.scores.items()}
        return {n: straight_through((p.detach() > self.threshold) & self.flags[n], p) * self.flags[n]
                for n, p in self.scores.items()}

    def __call__(self, x: Tensor, masks: dict[str, Tensor] | None = None) -> Tensor:
        """Forward ``x`` with every prunable weight replaced by ``w * mask``."""
        masks = self.soft_masks() if masks is None else masks
        return functional_call(self.model, {n: w * masks[n].to(w.dtype) for n, w in self.weights.items()},
                               (x,), strict=False)

    def score_list(self) -> list[Tensor]:
        return list(self.scores.values())

    def penalty(self, kind: str, alpha: float = 1.0, alpha_prime: float = 1.0) -> Tensor:
        """The regulariser over all scores (multiply by lambda)."""
        return regularization(kind, self.score_list(), list(self.weights.values()), alpha, alpha_prime)

    @torch.no_grad()
    def project_(self) -> None:
        """p <- clamp(p, 0, 1) (Gem-Miner's projection onto the hypercube; not for edge-popup)."""
        if self.algo in ("hc", "hc_iter"):
            for p in self.scores.values():
                p.clamp_(0.0, 1.0)

    # ---------------------------------------------------------------- masks out
    def flagged(self) -> int:
        """Weights not yet removed by thresholding."""
        return int(sum(int(f.sum()) for f in self.prunable(self.flags).values()))

    def numel(self) -> int:
        """Weights of the pruned layers (the target counts these)."""
        return int(sum(p.numel() for p in self.prunable(self.scores).values()))

    @torch.no_grad()
    def keep_top_(self, n_keep: int, invert: bool = False) -> int:
        """Global bottom-k thresholding: among flagged weights keep the ``n_keep`` largest |p|.

        Ties break by the lower index across the concatenation of layers
        (deterministic, docs/concepts.md, "Guarantees"). ``invert`` keeps the smallest instead
        (the inverted sanity check). Returns how many were unflagged.
        """
        scores = {n: p.abs() for n, p in self.prunable(self.scores).items()}
        before = sum(int(self.flags[n].sum()) for n in scores)
        keep = global_topk(scores, min(n_keep, before), {n: self.flags[n] for n in scores}, lowest=invert)
        self.flags.update({n: m.clone() for n, m in keep.items()})
        return before - sum(int(m.sum()) for m in keep.values())

    @torch.no_grad()
    def hard_masks(self, rounding: str = "naive", generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Boolean masks for evaluation: Gem-Miner rounds the scores (``naive``: p > threshold;
        ``prob``: Bernoulli(clamp(p, 0, 1)); ``all_ones``: the flags); edge-popup takes its top-k."""
        if self.algo in ("ep", "global_ep"):
            return {n: m.detach() > 0.5 for n, m in self.soft_masks().items()}
        if rounding == "naive":
            return {n: (p.detach() > self.threshold) & self.flags[n] for n, p in self.scores.items()}
        if rounding == "prob":
            if generator is None:
                raise SparsetrainError("probabilistic rounding needs a torch.Generator.")
            return {n: torch.bernoulli(p.detach().clamp(0, 1).cpu(), generator=generator).bool().to(p.device)
                    & self.flags[n] for n, p in self.scores.items()}
        if rounding == "all_ones":
            return {n: f.clone() for n, f in self.flags.items()}
        raise unknown_choice("rounding", rounding, ROUNDINGS)

    def release(self) -> None:
        """Give the parameters their ``requires_grad`` back: the model is a plain module again."""
        for n, p in self.model.named_parameters():
            p.requires_grad_(self._frozen.get(n, True))


def density_of(masks: dict[str, Tensor]) -> float:
    """Fraction of True entries over all masks.

    Example:
        >>> density_of({"a": torch.tensor([True, False]), "b": torch.tensor([True, True])})
        0.75
    """
    total = sum(m.numel() for m in masks.values())
    return sum(int(m.sum()) for m in masks.values()) / max(1, total)


__all__ = ["ALGOS", "REGULARIZERS", "ROUNDINGS", "SCORE_INITS", "ScoreSearch", "density_of", "init_scores",
           "kaiming_normal_", "regularization", "signed_constant_", "straight_through"]
