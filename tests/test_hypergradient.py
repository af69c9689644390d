"""The finite-difference unrolled hypergradient against the exact second-order gradient (autograd
through the unrolled weight step), on a tiny mixed-operation model and on a tiny RUAS supernet."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

from ruas_nni.training.losses import illumination_loss, noise_loss
from strategies import CooperativeBilevel, LowerStep, first_order_hypergradient, unrolled_hypergradient

pytestmark = pytest.mark.usefixtures("one_thread")


class MixedNet(nn.Module):
    """Two mixed edges (softmax(alpha)-weighted sums of candidate layers), like a DARTS supernet."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.ModuleList([nn.Linear(5, 5), nn.Sequential(nn.Linear(5, 5), nn.Tanh()), nn.Identity()])
        self.second = nn.ModuleList([nn.Linear(5, 2), nn.Sequential(nn.Linear(5, 2), nn.Softplus())])
        self.alpha_first = nn.Parameter(torch.randn(3) * 0.5)
        self.alpha_second = nn.Parameter(torch.randn(2) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w1 = torch.softmax(self.alpha_first, -1)
        h = sum(w * op(x) for w, op in zip(w1, self.first))
        w2 = torch.softmax(self.alpha_second, -1)
        return sum(w * op(torch.tanh(h)) for w, op in zip(w2, self.second))


def exact_unrolled(module: nn.Module, lower, upper, weight_names, alphas, step: LowerStep) -> list[torch.Tensor]:
    """d upper(w'(alpha), alpha) / d alpha with w' = w - eta (mu buf + grad_w lower + wd w), by autograd
    through the unrolled step (``create_graph``), parameters substituted with ``functional_call``."""
    params = dict(module.named_parameters())
    weights = [params[n] for n in weight_names]
    lower_value = lower(lambda *args: functional_call(module, params, args))
    grads = torch.autograd.grad(lower_value, weights, create_graph=True, allow_unused=True)
    unrolled = {}
    for index, (name, w, g) in enumerate(zip(weight_names, weights, grads)):
        g = torch.zeros_like(w) if g is None else g
        unrolled[name] = w - step.update(index, w, g)
    upper_value = upper(lambda *args: functional_call(module, {**params, **unrolled}, args))
    return [torch.zeros_like(a) if g is None else g
            for a, g in zip(alphas, torch.autograd.grad(upper_value, alphas, allow_unused=True))]


def _flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def _relative_error(a, b) -> float:
    return float((_flat(a) - _flat(b)).norm() / _flat(b).norm())


def test_finite_differences_match_the_exact_second_order_gradient():
    torch.manual_seed(0)
    model = MixedNet().double()
    x_tr, y_tr = torch.randn(16, 5, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    x_val, y_val = torch.randn(16, 5, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    alphas = [model.alpha_first, model.alpha_second]
    names = [n for n, _ in model.named_parameters() if not n.startswith("alpha")]
    weights = [dict(model.named_parameters())[n] for n in names]

    # A real SGD optimiser one step in: momentum buffers exist and enter the unrolled step.
    optimizer = torch.optim.SGD(weights, lr=0.3, momentum=0.9, weight_decay=3e-4)
    nn.functional.mse_loss(model(x_tr), y_tr).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.alpha_first.grad = model.alpha_second.grad = None
    step = LowerStep.from_optimizer(optimizer, weights)
    assert all(b is not None for b in step.momentum_buffers) and step.lrs == [0.3] * len(weights)

    def lower_of(forward):
        return nn.functional.mse_loss(forward(x_tr), y_tr)

    def upper_of(forward):
        return nn.functional.mse_loss(forward(x_val), y_val)

    before = [w.detach().clone() for w in weights]
    result = unrolled_hypergradient(lambda: lower_of(model), lambda: upper_of(model), weights, alphas, step)
    exact = exact_unrolled(model, lower_of, upper_of, names, alphas, step)
    first = first_order_hypergradient(lambda: upper_of(model), alphas).grads

    assert result.finite
    assert all(torch.equal(w, b) for w, b in zip(weights, before)), "weights must be restored bit for bit"
    assert all(a.grad is None for a in alphas)
    error = _relative_error(result.grads, exact)
    assert error < 1e-4, error
    # The second-order term matters here: first order is far off, so the agreement is not trivial.
    assert _relative_error(first, exact) > 100 * error
    # The losses it reports: L_tr at w and L_val at w'.
    assert torch.isclose(result.lower, lower_of(model))


def test_per_parameter_learning_rates_generalise_the_formula():
    torch.manual_seed(1)
    model = MixedNet().double()
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    alphas = [model.alpha_first, model.alpha_second]
    names = [n for n, _ in model.named_parameters() if not n.startswith("alpha")]
    weights = [dict(model.named_parameters())[n] for n in names]
    step = LowerStep([0.05 * (1 + i) for i in range(len(weights))], [0.0] * len(weights), [1e-3] * len(weights),
                     [None] * len(weights))

    def lower_of(forward):
        return nn.functional.mse_loss(forward(x), y)

    def upper_of(forward):
        return forward(x).pow(2).mean()

    result = unrolled_hypergradient(lambda: lower_of(model), lambda: upper_of(model), weights, alphas, step)
    exact = exact_unrolled(model, lower_of, upper_of, names, alphas, step)
    assert _relative_error(result.grads, exact) < 1e-4



class Wavy(nn.Module):
    """Weights ``w`` (6) and architecture ``alpha`` (3) with losses that are not quadratic in ``w``, so
    a central difference has a truncation error that grows with its step::

        L_tr(w, alpha)  = sum(cos(w) * (A alpha)) + 0.5 |w|^2
        L_val(w, alpha) = 0.5 |w - b|^2 + c . alpha

    ``b`` lies ``far`` from ``w' = w - eta grad_w L_tr``: the direction ``d = eta grad_w' L_val =
    eta (w' - b)`` of the Hessian-vector product is then about ``eta * far * sqrt(6)`` long."""

    def __init__(self, far: float, dtype: torch.dtype, lr: float) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(4)

        def rand(*shape):
            return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

        self.w = nn.Parameter(rand(6))
        self.alpha = nn.Parameter(rand(3))
        self.register_buffer("A", rand(6, 3))
        self.register_buffer("c", rand(3))
        w, alpha = self.w.detach(), self.alpha.detach()
        self.register_buffer("b", w - lr * (-torch.sin(w) * (self.A @ alpha) + w) + far * rand(6))

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        lower = (torch.cos(self.w) * (self.A @ self.alpha)).sum() + 0.5 * self.w.pow(2).sum()
        upper = 0.5 * (self.w - self.b).pow(2).sum() + self.c @ self.alpha
        return lower, upper


@pytest.mark.parametrize("dtype, far", [(torch.float64, 10.0), (torch.float32, 0.01)])
def test_the_finite_difference_step_is_r_in_weight_space(dtype, far):
    """``eps = r / ||d||``, so that ``w +- eps * d`` lies ``r = 0.01`` from ``w`` whatever the length of
    ``d``: the truncation error of the central difference is then O(r^2) (about 1e-5 relative here) and
    its rounding error O(machine epsilon / r): measured 7.7e-6 (float64) and 3.1e-5 (float32) relative.
    The other tests' losses are quadratic (no truncation error) or their directions short in float64,
    where any small step passes. Here a step scaled the wrong way, ``eps = r * ||d||``
    (``w +- r ||d||^2``), is 0.01 * 14^2 = 2 long with a long direction (float64: the cosine's curvature
    shows, 30 % off) and 0.01 * 0.014^2 = 2e-6 long with a short one (float32: the difference cancels
    to rounding noise, 35 % off); both fail the 1e-3 below."""
    model = Wavy(far, dtype, lr=0.6)
    step = LowerStep.sgd([model.w], lr=0.6)

    def lower_of(forward):
        return forward()[0]

    def upper_of(forward):
        return forward()[1]

    result = unrolled_hypergradient(lambda: lower_of(model), lambda: upper_of(model), [model.w], [model.alpha], step)
    model.double()
    exact = exact_unrolled(model, lower_of, upper_of, ["w"], [model.alpha], step)[0]
    direction = 0.6 * (model.w.detach() - 0.6 * torch.autograd.grad(lower_of(model), model.w)[0] - model.b)
    assert 0.5 < float(direction.norm()) / (0.6 * far * 6 ** 0.5) < 2  # the length the docstring assumes
    # grad_alpha L_val = c wherever w is: what is left is the finite-difference (Hessian) term
    hessian_term, exact_term = result.grads[0].double() - model.c, exact - model.c
    error = float((hessian_term - exact_term).norm() / exact_term.norm())
    assert error < 1e-3, error

def _tiny_ruas_supernet():
    from search_spaces import RUASSpace

    torch.manual_seed(3)
    space = RUASSpace(iem_stages=2, nrm_cells=1, nrm_channels=3)
    CooperativeBilevel().mutate_model(space)  # the differentiable supernet NNI's DARTS makes
    space.double()
    with torch.no_grad():  # alphas away from uniform, so that every term of the gradient is alive
        for module in space.modules():
            alpha = module._parameters.get("_arch_alpha") if hasattr(module, "_parameters") else None
            if alpha is not None:
                alpha.normal_(0.0, 0.5)
    return space


class _Enhance(nn.Module):
    """``space.enhance`` as a forward, for ``functional_call``."""

    def __init__(self, space: nn.Module) -> None:
        super().__init__()
        self.space = space

    def forward(self, y):
        return tuple(self.space.enhance(y))


def test_cooperative_iem_hypergradient_on_a_ruas_supernet():
    """The IEM group's step 5 of Algorithm 1: upper L_val^t + beta L_val^n, lower L_tr^t over w_t."""
    from strategies import labelled_architecture_parameters

    space = _tiny_ruas_supernet()
    model = _Enhance(space)
    y_tr = torch.rand(1, 3, 10, 10, dtype=torch.float64) * 0.3
    y_val = torch.rand(1, 3, 10, 10, dtype=torch.float64) * 0.3
    beta = 0.7
    alphas_by_label = labelled_architecture_parameters(space)
    alphas = [p for label, p in alphas_by_label.items() if label.startswith("iem/")]
    arch_ids = {id(p) for p in alphas_by_label.values()}
    names = [n for n, p in model.named_parameters() if n.startswith("space.iem.") and id(p) not in arch_ids]
    weights = [dict(model.named_parameters())[n] for n in names]
    step = LowerStep.sgd(weights, lr=0.05, weight_decay=3e-4)

    def lower_of(forward):
        _, _, illuminations = forward(y_tr)
        return illumination_loss(y_tr, illuminations[-1])

    def upper_of(forward):
        final, iem, illuminations = forward(y_val)
        return illumination_loss(y_val, illuminations[-1]) + beta * noise_loss(final, iem)

    # The RUAS losses are piecewise smooth (|t(p) - t(q)|, clamps, max filter): a radius small enough
    # not to cross a kink makes the finite difference exact to rounding; DARTS' r = 0.01 crosses some
    # (about 10 % off on this tiny example), which is the approximation the paper accepts.
    result = unrolled_hypergradient(lambda: lower_of(model), lambda: upper_of(model), weights, alphas, step, r=1e-5)
    exact = exact_unrolled(model, lower_of, upper_of, names, alphas, step)
    first = first_order_hypergradient(lambda: upper_of(model), alphas).grads
    error = _relative_error(result.grads, exact)
    assert error < 1e-6, error
    assert _relative_error(first, exact) > 0.1


def test_no_network_copies(monkeypatch):
    """The hypergradient swaps weights in place; it never deep-copies the model."""
    torch.manual_seed(0)
    model = MixedNet()
    weights = [p for n, p in model.named_parameters() if not n.startswith("alpha")]
    x = torch.randn(4, 5)

    def forbidden(*args, **kwargs):
        raise AssertionError("copy.deepcopy called")

    monkeypatch.setattr(copy, "deepcopy", forbidden)
    result = unrolled_hypergradient(lambda: model(x).pow(2).mean(), lambda: model(x).abs().mean(), weights,
                                    [model.alpha_first, model.alpha_second], LowerStep.sgd(weights, lr=0.1))
    assert result.finite and result.grads[0].shape == (3,)


def test_non_finite_losses_are_reported_and_weights_restored():
    torch.manual_seed(0)
    model = MixedNet()
    weights = [p for n, p in model.named_parameters() if not n.startswith("alpha")]
    before = [w.detach().clone() for w in weights]
    x = torch.randn(4, 5)
    result = unrolled_hypergradient(lambda: model(x).pow(2).mean(), lambda: model(x).mean() * float("nan"), weights,
                                    [model.alpha_first, model.alpha_second], LowerStep.sgd(weights, lr=0.1))
    assert not result.finite
    assert all(torch.equal(w, b) for w, b in zip(weights, before))
