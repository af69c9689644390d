"""The unrolled weight step of the hypergradient against hand-written momentum SGD with weight decay.

PyTorch's SGD: ``buf' = momentum * buf + (g + wd * w)``, ``w' = w - lr * buf'``. The oracles here
compute ``g`` by hand (quadratic losses) or by plain autograd and write that update out; none calls
``LowerStep.update`` or any other part of :mod:`strategies.hypergradient`. Every case has a non-zero
momentum buffer, so a dropped momentum term (or weight decay, or a wrong learning rate) fails.
"""

from __future__ import annotations

import copy

import pytest
import torch

import strategies.cooperative as cooperative
from strategies import LowerStep, unrolled_hypergradient

pytestmark = pytest.mark.usefixtures("one_thread")


class Quadratic:
    """L_tr(w, alpha) = 0.5 |w1 - A alpha|^2 + 0.5 sum(s * w2^2)   (g1 = w1 - A alpha, g2 = s * w2)
    L_val(w, alpha) = 0.5 |w1 - b|^2 + 0.5 |w2 - B|^2 + c . alpha

    With w1' = w1 - lr1 (mu buf1 + g1 + wd w1), dw1'/dalpha = lr1 A, so the exact hypergradient is
    c + lr1 A^T (w1' - b); the finite differences of a quadratic are exact up to rounding."""

    def __init__(self, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)

        def rand(*shape):
            return torch.randn(*shape, generator=gen, dtype=torch.float64)

        self.A, self.b, self.c = rand(4, 3), rand(4), rand(3)
        self.s, self.B = rand(3, 2).abs() + 0.5, rand(3, 2)
        self.w1 = torch.nn.Parameter(rand(4))
        self.w2 = torch.nn.Parameter(rand(3, 2))
        self.alpha = torch.nn.Parameter(rand(3))
        self.buf1, self.buf2 = rand(4), rand(3, 2)
        self.seen_by_upper: list[list[torch.Tensor]] = []

    def lower(self) -> torch.Tensor:
        return 0.5 * (self.w1 - self.A @ self.alpha).pow(2).sum() + 0.5 * (self.s * self.w2.pow(2)).sum()

    def upper(self) -> torch.Tensor:
        self.seen_by_upper.append([self.w1.detach().clone(), self.w2.detach().clone()])
        return 0.5 * (self.w1 - self.b).pow(2).sum() + 0.5 * (self.w2 - self.B).pow(2).sum() + self.c @ self.alpha

    def grads(self) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return self.w1 - self.A @ self.alpha, self.s * self.w2


def _hand_sgd(w, g, buf, lr, momentum, wd):
    """PyTorch SGD semantics, written out: returns (w', buf')."""
    new_buf = momentum * buf + (g + wd * w)
    return w - lr * new_buf, new_buf


@pytest.mark.parametrize("lrs,momentum,wd", [((0.3, 0.3), 0.9, 3e-4), ((0.2, 0.05), 0.5, 0.1), ((0.1, 0.4), 0.9, 0.0)])
def test_unrolled_weights_are_one_momentum_sgd_step(lrs, momentum, wd):
    q = Quadratic()
    w1, w2 = q.w1.detach().clone(), q.w2.detach().clone()
    g1, g2 = q.grads()
    step = LowerStep(list(lrs), [momentum] * 2, [wd] * 2, [q.buf1.clone(), q.buf2.clone()])
    result = unrolled_hypergradient(q.lower, q.upper, [q.w1, q.w2], [q.alpha], step)

    expected1, _ = _hand_sgd(w1, g1, q.buf1, lrs[0], momentum, wd)
    expected2, _ = _hand_sgd(w2, g2, q.buf2, lrs[1], momentum, wd)
    seen1, seen2 = q.seen_by_upper[0]  # the upper loss is evaluated at w' (and only there)
    assert len(q.seen_by_upper) == 1
    torch.testing.assert_close(seen1, expected1, rtol=0, atol=1e-13)
    torch.testing.assert_close(seen2, expected2, rtol=0, atol=1e-13)
    # The momentum term is large here: without it w' would be far off.
    assert (seen1 - _hand_sgd(w1, g1, 0 * q.buf1, lrs[0], momentum, wd)[0]).abs().max() > 1e-3

    # The closed-form hypergradient c + lr1 A^T (w1' - b), and the reported losses.
    exact = q.c + lrs[0] * q.A.T @ (expected1 - q.b)
    torch.testing.assert_close(result.grads[0], exact, rtol=1e-6, atol=1e-8)
    assert result.lower.item() == pytest.approx(
        float(0.5 * (w1 - q.A @ q.alpha.detach()).pow(2).sum() + 0.5 * (q.s * w2.pow(2)).sum()), rel=1e-12)
    upper_at_w_prime = 0.5 * (expected1 - q.b).pow(2).sum() + 0.5 * (expected2 - q.B).pow(2).sum() + q.c @ q.alpha.detach()
    assert result.upper.item() == pytest.approx(float(upper_at_w_prime), rel=1e-12)
    # Weights restored bit for bit; momentum buffers untouched.
    assert torch.equal(q.w1.detach(), w1) and torch.equal(q.w2.detach(), w2)


def test_no_buffer_or_no_momentum_is_plain_sgd_with_decay():
    q = Quadratic(1)
    w1 = q.w1.detach().clone()
    g1, _ = q.grads()
    for step in (LowerStep([0.2] * 2, [0.9] * 2, [0.01] * 2, [None, None]),  # first step: no buffer yet
                 LowerStep([0.2] * 2, [0.0] * 2, [0.01] * 2, [q.buf1, q.buf2])):  # momentum 0: buffer ignored
        q.seen_by_upper.clear()
        unrolled_hypergradient(q.lower, q.upper, [q.w1, q.w2], [q.alpha], step)
        torch.testing.assert_close(q.seen_by_upper[0][0], w1 - 0.2 * (g1 + 0.01 * w1), rtol=0, atol=1e-13)


def test_unrolled_step_is_the_step_torch_sgd_takes_next():
    """A real ``torch.optim.SGD`` two steps in (non-zero buffers, two parameter groups, a scheduler):
    ``LowerStep.from_optimizer`` plus the unrolled step give exactly the weights that the optimiser's
    next step produces on the same gradient."""
    q = Quadratic(2)
    optimizer = torch.optim.SGD([{"params": [q.w1], "lr": 0.1}, {"params": [q.w2], "lr": 0.03, "weight_decay": 0.02}],
                                lr=0.1, momentum=0.8, weight_decay=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    for _ in range(2):
        optimizer.zero_grad()
        q.lower().backward()
        optimizer.step()
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    q.alpha.grad = None
    assert [g["lr"] for g in optimizer.param_groups] == [0.025, 0.0075]

    # What SGD itself does next, on a copy.
    twin_w1, twin_w2 = torch.nn.Parameter(q.w1.detach().clone()), torch.nn.Parameter(q.w2.detach().clone())
    twin = torch.optim.SGD([{"params": [twin_w1], "lr": 0.1}, {"params": [twin_w2], "lr": 0.03, "weight_decay": 0.02}],
                           lr=0.1, momentum=0.8, weight_decay=1e-3)
    buffer_before = optimizer.state[q.w1]["momentum_buffer"].clone()
    twin.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    g1, g2 = q.grads()
    twin_w1.grad, twin_w2.grad = g1.clone(), g2.clone()
    twin.step()

    step = LowerStep.from_optimizer(optimizer, [q.w1, q.w2])
    assert step.lrs == [0.025, 0.0075] and step.momentums == [0.8, 0.8] and step.weight_decays == [1e-3, 0.02]
    unrolled_hypergradient(q.lower, q.upper, [q.w1, q.w2], [q.alpha], step)
    torch.testing.assert_close(q.seen_by_upper[0][0], twin_w1.detach(), rtol=0, atol=1e-13)
    torch.testing.assert_close(q.seen_by_upper[0][1], twin_w2.detach(), rtol=0, atol=1e-13)
    # The hand-written form agrees with SGD too (so the two oracles check each other).
    buf1 = optimizer.state[q.w1]["momentum_buffer"]
    torch.testing.assert_close(_hand_sgd(q.w1.detach(), g1, buf1, 0.025, 0.8, 1e-3)[0], twin_w1.detach(),
                               rtol=0, atol=1e-13)
    # The unrolled step leaves the optimiser's buffers alone.
    assert torch.equal(optimizer.state[q.w1]["momentum_buffer"], buffer_before)


def test_the_strategy_unrolls_through_its_optimisers_momentum_step(tmp_path, monkeypatch):
    """In the cooperative search, the upper loss of each architecture step sees the weights after one
    step of momentum SGD (lr 0.005, momentum 0.9, weight decay 3e-4: the evaluator's optimiser,
    with its current momentum buffers) on the lower loss's gradient, written out by hand here."""
    from test_search_batches import _search

    checks = []
    real = cooperative.unrolled_hypergradient

    def spy(lower, upper, weights, alphas, step, **kwargs):
        module = strategy_box["module"]
        optimizer = module._weight_optimizer()
        optimizer = getattr(optimizer, "optimizer", optimizer)
        w = [p.detach().clone() for p in weights]
        grads = torch.autograd.grad(lower(), weights, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(w, grads)]
        buffers = [optimizer.state.get(p, {}).get("momentum_buffer") for p in weights]
        group = optimizer.param_groups[0]
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        expected = [wi - lr * (momentum * (b if b is not None else 0 * wi) + gi + wd * wi)
                    for wi, gi, b in zip(w, grads, buffers)]
        seen = []

        def recording_upper():
            if not seen:
                seen.append([p.detach().clone() for p in weights])
            return upper()

        result = real(lower, recording_upper, weights, alphas, step, **kwargs)
        checks.append((expected, seen[0], w, buffers, (lr, momentum, wd), kwargs.get("r")))
        return result

    strategy_box = {}
    original_init = cooperative.CooperativeBilevelLightningModule.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        strategy_box["module"] = self

    monkeypatch.setattr(cooperative.CooperativeBilevelLightningModule, "__init__", init)
    monkeypatch.setattr(cooperative, "unrolled_hypergradient", spy)
    _search(cooperative.CooperativeBilevel(groups=cooperative.ruas_groups(nrm_period=1), finite_difference_r=0.02),
            tmp_path, batches=3)

    assert len(checks) == 6  # IEM and NRM on each of 3 batches
    with_buffers = 0
    for expected, seen, w, buffers, hyper, r in checks:
        assert hyper == (0.005, 0.9, 3e-4) and r == 0.02
        delta_expected = torch.cat([(a - b).reshape(-1) for a, b in zip(w, expected)])
        delta_seen = torch.cat([(a - b).reshape(-1) for a, b in zip(w, seen)])
        assert float((delta_seen - delta_expected).norm()) <= 1e-3 * float(delta_expected.norm()) + 1e-9
        if all(b is not None for b in buffers):
            with_buffers += 1
            momentum_part = torch.cat([(0.005 * 0.9 * b).reshape(-1) for b in buffers])
            assert float(momentum_part.norm()) > 0.05 * float(delta_expected.norm())  # a term that shows
    assert with_buffers == 4  # batches 1 and 2, both groups
