"""The one-step unrolled hypergradient of DARTS / RUAS (spec Sec. 3; paper Algorithm 1, steps 5 and 10).

For architecture weights ``alpha``, network weights ``w``, a lower-level loss ``L_tr`` (the one the
weights are trained on) and an upper-level loss ``L_val``, the second-order approximation of
``d L_val(w*(alpha), alpha) / d alpha`` is::

    w'  = w - eta * (mu * momentum_buffer + grad_w L_tr(w, alpha) + wd * w)     # one SGD step
    g   = grad_alpha L_val(w', alpha) - eta * grad2_{alpha, w} L_tr(w, alpha) . grad_w' L_val(w', alpha)

and the Hessian-vector product is taken by central finite differences (DARTS, Liu et al. 2019)::

    v   = grad_w' L_val(w', alpha),   eps = r / ||v||,   w+- = w +- eps * v
    g  ~= grad_alpha L_val(w', alpha) - eta * (grad_alpha L_tr(w+) - grad_alpha L_tr(w-)) / (2 eps)

with ``r = 0.01``. Nothing here copies a network: the losses are closures that evaluate the model
with whatever values its parameters hold, and the weights are *swapped* in place (``w``, ``w'``,
``w+``, ``w-``) and restored bit for bit from one saved copy of the weight tensors afterwards. Each
evaluation is one forward and one backward pass: four per hypergradient.

When parameters have different learning rates the direction generalises to ``d = eta (.) v`` (``(.)``
elementwise), ``eps = r / ||d||``, ``w+- = w +- eps * d`` and the correction to
``(grad_alpha L_tr(w+) - grad_alpha L_tr(w-)) / (2 eps)``; with one learning rate this is exactly the
formula above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["LowerStep", "Hypergradient", "unrolled_hypergradient", "first_order_hypergradient", "RandomStateScope"]

LossFn = Callable[[], Tensor]
"""A closure that evaluates a scalar loss with the current values of the model's parameters."""


@dataclass
class LowerStep:
    """The lower-level weight update that the unrolled step imitates: SGD with momentum and weight
    decay, one learning rate / momentum / weight decay / momentum buffer per parameter.

    Optimisers without momentum (Adam, for example) give ``momentum = 0``: the unrolled step is then
    plain gradient descent with the optimiser's learning rate, as in DARTS.
    """

    lrs: list[float]
    momentums: list[float]
    weight_decays: list[float]
    momentum_buffers: list[Tensor | None]

    @classmethod
    def from_optimizer(cls, optimizer: torch.optim.Optimizer, params: Sequence[Tensor]) -> LowerStep:
        """Read ``eta``, ``mu``, ``wd`` and the momentum buffers of ``params`` from ``optimizer``
        (its current learning rates, after any scheduler step)."""
        group_of: dict[int, dict] = {}
        for group in optimizer.param_groups:
            for p in group["params"]:
                group_of[id(p)] = group
        lrs, momentums, decays, buffers = [], [], [], []
        for p in params:
            group = group_of.get(id(p))
            if group is None:
                raise ValueError("a weight of the unrolled step is not optimised by the weight optimizer")
            momentum = float(group.get("momentum", 0.0) or 0.0)
            lrs.append(float(group["lr"]))
            momentums.append(momentum)
            decays.append(float(group.get("weight_decay", 0.0) or 0.0))
            state = optimizer.state.get(p, {})
            buffers.append(state.get("momentum_buffer") if momentum else None)
        return cls(lrs, momentums, decays, buffers)

    @classmethod
    def sgd(cls, params: Sequence[Tensor], lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
            momentum_buffers: Sequence[Tensor | None] | None = None) -> LowerStep:
        """The same step for every parameter (handy in tests and scripts)."""
        n = len(params)
        buffers = list(momentum_buffers) if momentum_buffers is not None else [None] * n
        return cls([lr] * n, [momentum] * n, [weight_decay] * n, buffers)

    def update(self, index: int, weight: Tensor, grad: Tensor) -> Tensor:
        """``eta * (mu * buffer + grad + wd * w)`` for parameter ``index``: what SGD subtracts."""
        direction = grad
        if self.weight_decays[index]:
            direction = direction + self.weight_decays[index] * weight
        buffer = self.momentum_buffers[index]
        if buffer is not None and self.momentums[index]:
            direction = direction + self.momentums[index] * buffer
        return self.lrs[index] * direction


@dataclass
class Hypergradient:
    """The result of one hypergradient evaluation."""

    grads: list[Tensor]
    """``d L_val / d alpha`` for each architecture tensor, in the order given."""
    upper: Tensor
    """``L_val`` (detached) where it was evaluated: at ``w'`` (unrolled) or ``w`` (first order)."""
    lower: Tensor | None
    """``L_tr(w)`` (detached); ``None`` for the first-order gradient."""
    finite: bool
    """Whether both losses and every gradient are finite."""


class RandomStateScope:
    """Remember the random number generators' state and put it back, so that two forward passes of a
    stochastic model (dropout) see the same randomness: the finite difference then measures the
    weights' effect, not the noise."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


def _grads(loss: Tensor, tensors: Sequence[Tensor]) -> list[Tensor]:
    """Gradients of ``loss`` with respect to ``tensors``; zeros where ``loss`` does not depend on one."""
    if not tensors:
        return []
    grads = torch.autograd.grad(loss, list(tensors), allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]


def _all_finite(tensors: Sequence[Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def first_order_hypergradient(upper_loss: LossFn, alphas: Sequence[Tensor]) -> Hypergradient:
    """``grad_alpha L_val(w, alpha)``: the first-order approximation (``eta = 0``, DARTS 1st order)."""
    upper = upper_loss()
    if not bool(torch.isfinite(upper)):
        return Hypergradient([torch.zeros_like(a) for a in alphas], upper.detach(), None, False)
    grads = _grads(upper, alphas)
    return Hypergradient(grads, upper.detach(), None, _all_finite(grads))


def unrolled_hypergradient(
    lower_loss: LossFn,
    upper_loss: LossFn,
    weights: Sequence[Tensor],
    alphas: Sequence[Tensor],
    step: LowerStep,
    *,
    r: float = 0.01,
    same_randomness: bool = True,
) -> Hypergradient:
    """The one-step unrolled hypergradient of ``upper_loss`` with respect to ``alphas`` (module doc).

    Parameters
    ----------
    lower_loss
        ``L_tr``: the loss the ``weights`` are trained on (training batch).
    upper_loss
        ``L_val``: the architecture's loss (validation batch).
    weights
        The lower-level weights ``w`` (leaf tensors; modified in place during the call and restored).
    alphas
        The architecture tensors to differentiate.
    step
        The weight optimizer's step (``eta``, momentum, weight decay, momentum buffers).
    r
        The finite-difference radius: ``eps = r / ||grad_w' L_val||``.
    same_randomness
        Evaluate ``L_tr(w+)`` and ``L_tr(w-)`` with the same random state (dropout masks).

    ``alphas`` must not receive their gradients in ``.grad`` here; they are returned.
    """
    weights = list(weights)
    alphas = list(alphas)
    if not weights:
        return first_order_hypergradient(upper_loss, alphas)

    # grad_w L_tr(w, alpha): the gradient the lower-level step follows.
    lower = lower_loss()
    if not bool(torch.isfinite(lower)):
        return Hypergradient([torch.zeros_like(a) for a in alphas], lower.detach() * math.nan, lower.detach(), False)
    weight_grads = _grads(lower, weights)
    lower_value = lower.detach()
    del lower

    original = [w.detach().clone() for w in weights]
    try:
        # w' = w - eta * (mu * buffer + grad_w L_tr + wd * w), written into the weights themselves.
        with torch.no_grad():
            for index, (w, g) in enumerate(zip(weights, weight_grads)):
                w.sub_(step.update(index, w, g))
        del weight_grads

        # grad_alpha L_val(w') and v = grad_w' L_val(w') from one backward pass.
        upper = upper_loss()
        if not bool(torch.isfinite(upper)):
            return Hypergradient([torch.zeros_like(a) for a in alphas], upper.detach(), lower_value, False)
        grads = _grads(upper, alphas + weights)
        upper_value = upper.detach()
        del upper
        alpha_grads, v = grads[: len(alphas)], grads[len(alphas):]
        if not _all_finite(alpha_grads) or not _all_finite(v):
            return Hypergradient(alpha_grads, upper_value, lower_value, False)

        # The Hessian-vector product grad2_{alpha,w} L_tr . (eta (.) v) by central differences.
        direction = [lr * vi for lr, vi in zip(step.lrs, v)]
        norm = float(torch.sqrt(sum((d.double() ** 2).sum() for d in direction)))
        if norm == 0.0 or not math.isfinite(norm):
            finite = math.isfinite(norm)
            return Hypergradient(alpha_grads, upper_value, lower_value, finite)
        eps = r / norm

        randomness = RandomStateScope() if same_randomness else None
        with torch.no_grad():
            for w, w0, d in zip(weights, original, direction):
                w.copy_(w0).add_(d, alpha=eps)
        grads_plus = _grads(lower_loss(), alphas)
        if randomness is not None:
            randomness.restore()
        with torch.no_grad():
            for w, w0, d in zip(weights, original, direction):
                w.copy_(w0).sub_(d, alpha=eps)
        grads_minus = _grads(lower_loss(), alphas)

        result = [g - (gp - gm) / (2.0 * eps) for g, gp, gm in zip(alpha_grads, grads_plus, grads_minus)]
        return Hypergradient(result, upper_value, lower_value, _all_finite(result))
    finally:
        with torch.no_grad():
            for w, w0 in zip(weights, original):
                w.copy_(w0)
