"""Cooperative bilevel architecture search (RUAS, paper Algorithm 1) as an NNI one-shot strategy.

The paper searches two groups of architecture weights that cooperate: ``alpha_t`` of the
illumination-estimation module (IEM) and ``alpha_n`` of the noise-removal module (NRM). Each has its
own network weights (``w_t``, ``w_n``) and its own reference-free loss (``L_t``, ``L_n``). One step
of Algorithm 1 is::

    (a) IEM inner loop:   alpha_t <- alpha_t - lr * hypergrad_{alpha_t}(L_val^t + beta * L_val^n)    # step 5
                          w_t     <- w_t - SGD(grad_{w_t} L_tr^t)                                    # step 6
    (b) NRM inner loop:   alpha_n <- alpha_n - lr * hypergrad_{alpha_n}(L_val^n)  (with the new alpha_t)  # step 10
                          w_n     <- w_n - SGD(grad_{w_n} L_tr^n)                                    # step 11

with the one-step unrolled hypergradient of :mod:`strategies.hypergradient`. The reference steps the
NRM every 10th batch only.

Nothing here knows about images. A *group* (:class:`ChoiceGroup`) names

* which architecture labels it owns (``fnmatch`` patterns, ``"iem/*"``),
* which network weights it owns (``fnmatch`` patterns over the parameter names of the model space,
  ``"iem.*"``),
* the key of its loss in the dict that the evaluator's ``training_step`` returns (the group name).

The evaluator's ``training_step`` returns ``{"loss": total, "<group>": that group's loss, ...}`` (a
bare tensor is read as ``{"loss": tensor}``). Optionally it declares an attribute
``requested_losses``: the strategy then sets it to the set of keys it is about to read (``None`` =
all), so an evaluator may skip work (the IEM loss needs no NRM forward pass).

Without groups, or on a model space whose labels match none of them, the strategy is plain
second-order DARTS over every choice and every weight with the ``"loss"`` key, so it runs on any
model space NNI's :class:`~nni.nas.strategy.DARTS` runs on (``LayerChoice``, ``InputChoice``,
``Repeat``, ``Cell``, ``nni.choice``-parametrised operations).

Variants (the paper's ablations, Fig. 9): :class:`SeparateSearch` (the first group to the end, then
the next) and :class:`JointDARTS` (one second-order DARTS over the whole network with the summed
loss).
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Iterator, Mapping, Sequence

# ``nni.nas.strategy`` must be imported before ``nni.nas.oneshot.pytorch``: the other order runs
# into a circular import that NNI papers over by replacing ``nni.nas.strategy.DARTS`` (and the other
# one-shot strategies) with a placeholder for the rest of the process.
import nni.nas.strategy  # noqa: F401, I001  (import order matters, see above)
import torch
from nni.mutable import MutableExpression
from nni.nas.evaluator.pytorch.lightning import LightningModule
from nni.nas.nn.pytorch import LayerChoice
from nni.nas.oneshot.pytorch.differentiable import DartsLightningModule
from nni.nas.oneshot.pytorch.profiler import ExpectationProfilerPenalty
from nni.nas.profiler import ExpressionProfiler
from nni.nas.strategy import DARTS
from torch import Tensor, nn

from .hypergradient import Hypergradient, LowerStep, first_order_hypergradient, unrolled_hypergradient
from .nni_compat import arch_alpha, count_optimizer_step, layer_softmax

__all__ = [
    "ALL_LOSSES",
    "SCHEDULES",
    "ChoiceGroup",
    "RUAS_GROUPS",
    "ruas_groups",
    "NonFiniteSearchError",
    "CooperativeBilevelLightningModule",
    "CooperativeBilevel",
    "SeparateSearch",
    "JointDARTS",
    "labelled_architecture_parameters",
    "differentiable_probs",
    "ParameterCountProfiler",
    "parameter_budget_penalty",
    "expected_cost_penalty",
    "PenaltySum",
    "TableProfiler",
]

_log = logging.getLogger(__name__)

ALL_LOSSES = "loss"
"""The key of the total loss in the evaluator's output; the loss of the single group of plain DARTS."""

SCHEDULES = ("cooperative", "separate")


@dataclass(frozen=True)
class ChoiceGroup:
    """A group of architecture choices searched together, with the weights and the loss it owns.

    Parameters
    ----------
    name
        The key of this group's loss in the dict returned by the evaluator's ``training_step``.
    labels
        ``fnmatch`` patterns of the architecture labels of the group (``"iem/*"``).
    weights
        ``fnmatch`` patterns of the names (``model_space.named_parameters()``) of the network weights
        that the group's lower level trains (``"iem.*"``).
    period
        Step the group on every ``period``-th batch of an epoch (the reference steps the NRM every 10th).
    inner_steps
        Length of the group's inner loop: architecture + weight steps per visit, on the same batches.
    """

    name: str
    labels: tuple[str, ...]
    weights: tuple[str, ...]
    period: int = 1
    inner_steps: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "weights", tuple(self.weights))
        if not self.name or self.name == ALL_LOSSES:
            raise ValueError(f"a choice group needs a name other than {ALL_LOSSES!r}, got {self.name!r}")
        if self.period < 1 or self.inner_steps < 1:
            raise ValueError(f"group {self.name!r}: period and inner_steps must be at least 1")


def ruas_groups(nrm_period: int = 10, iem_inner_steps: int = 1, nrm_inner_steps: int = 1) -> tuple[ChoiceGroup, ...]:
    """The two groups of ``RUASSpace``: IEM (labels ``iem/*``, weights ``iem.*``, loss ``"iem"``) first,
    then NRM (``nrm/*``, ``nrm.*``, ``"nrm"``) every ``nrm_period``-th batch."""
    return (
        ChoiceGroup("iem", ("iem/*",), ("iem.*",), period=1, inner_steps=iem_inner_steps),
        ChoiceGroup("nrm", ("nrm/*",), ("nrm.*",), period=nrm_period, inner_steps=nrm_inner_steps),
    )


RUAS_GROUPS = ruas_groups()
"""The reference setting: IEM every batch, NRM every 10th batch, one inner step each."""


class NonFiniteSearchError(RuntimeError):
    """Too many steps in a row had non-finite losses or gradients; the search stopped."""


@dataclass
class _Group:
    """A :class:`ChoiceGroup` resolved against a supernet."""

    name: str
    period: int
    inner_steps: int
    labels: list[str]
    alphas: list[nn.Parameter]
    weights: list[nn.Parameter]
    lower_key: str
    upper_terms: list[tuple[str, float]] = field(default_factory=list)

    @property
    def upper_keys(self) -> frozenset[str]:
        return frozenset(key for key, _ in self.upper_terms)


def labelled_architecture_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The architecture weights of a differentiable NNI supernet by label, sorted by label.

    NNI's differentiable modules keep their weights in ``_arch_alpha`` (read through
    :func:`strategies.nni_compat.arch_alpha`): one parameter (``LayerChoice``, ``InputChoice``: the
    label is the module's) or a ``ParameterDict`` keyed by label (mixed operations, ``Repeat``,
    ``Cell`` edges). Modules that share a label share the parameter; it is listed once.
    Architecture parameters found only through ``arch_parameters()`` are named after their module.
    """
    found: dict[str, nn.Parameter] = {}
    seen: set[int] = set()

    def add(label: str, param: nn.Parameter) -> None:
        if id(param) not in seen:
            seen.add(id(param))
            found.setdefault(label, param)

    modules = list(model.named_modules())
    for _, module in modules:
        alpha = arch_alpha(module)
        if isinstance(alpha, nn.Parameter) and hasattr(module, "label"):
            add(str(module.label), alpha)
        if isinstance(alpha, nn.ParameterDict):
            for label, param in alpha.items():
                add(str(label), param)
    for name, module in modules:
        if hasattr(module, "arch_parameters") and callable(module.arch_parameters) and module is not model:
            for index, param in enumerate(module.arch_parameters()):
                add(f"{name}#{index}", param)
    return dict(sorted(found.items()))


def differentiable_probs(model: nn.Module) -> dict[str, dict[str, Tensor]]:
    """The choice probabilities of a differentiable NNI supernet, ``{label: {op name: p}}``, as
    tensors that carry the gradient to the alphas.

    NNI's ``export_probs`` gives the same numbers as Python floats (``.tolist()``), so a penalty
    computed from it, such as :class:`~nni.nas.oneshot.pytorch.profiler.ExpectationProfilerPenalty`
    inside NNI's DARTS, changes the loss's value but never moves an alpha. The cooperative search
    feeds the penalty these instead.
    """
    probs: dict[str, dict[str, Tensor]] = {}
    for module in model.modules():
        alpha = arch_alpha(module)
        names = getattr(module, "names", None)
        label = getattr(module, "label", None)
        if isinstance(alpha, nn.Parameter) and names is not None and label is not None and label not in probs:
            probs[str(label)] = dict(zip(names, layer_softmax(module)(alpha)))
    return probs


class TableProfiler(ExpressionProfiler):
    """A measured cost of a model space as an NNI expression over its ``LayerChoice`` labels:
    ``fixed + sum over labels of table[label][op]`` (the latency lookup table of ProxylessNAS and
    FBNet: what the network costs with every choice at its cheapest, plus each choice's extra cost).
    Under :class:`~nni.nas.oneshot.pytorch.profiler.ExpectationProfilerPenalty` its expectation is
    linear in the probabilities, so the penalty's gradient reaches the alphas.

    ``table`` must give a cost for every candidate of every label of the space, and name no other label.
    """

    def __init__(self, model_space: nn.Module, table: Mapping[str, Mapping[str, float]], fixed: float = 0.0) -> None:
        choices: dict[str, LayerChoice] = {}
        for module in model_space.modules():
            if isinstance(module, LayerChoice):
                choices.setdefault(str(module.label), module)
        unknown = sorted(set(table) - set(choices))
        if unknown:
            raise ValueError(f"cost table: no choice labelled {', '.join(unknown)} in the model space")
        per_label: dict[str, dict[str, float]] = {}
        for label, module in sorted(choices.items()):
            costs = table.get(label)
            missing = [name for name in module.names if costs is None or name not in costs]
            if missing:
                raise ValueError(f"cost table: no cost for {label} = {', '.join(map(str, missing))}")
            per_label[label] = {name: float(costs[name]) for name in module.names}
        self.fixed = float(fixed)
        self.per_label = per_label
        expression: Any = self.fixed
        for label, costs in per_label.items():
            expression = expression + MutableExpression(costs.__getitem__, "cost({})", [choices[label].choice])
        self.expression = expression

    def expected(self, probs: Mapping[str, Mapping[str, Any]]) -> Any:
        """``fixed + sum_label sum_op p(label = op) * cost(label = op)``."""
        total: Any = self.fixed
        for label, costs in self.per_label.items():
            total = total + sum(probs[label][op] * cost for op, cost in costs.items())
        return total


class ParameterCountProfiler(TableProfiler):
    """The parameter count of a model space as an NNI expression over its ``LayerChoice`` labels.

    ``expression = fixed + sum over labels of params(label = op)``, where ``params(label = op)`` adds
    the parameters of candidate ``op`` over every ``LayerChoice`` with that label (RUAS's three IEM
    stages and three NRM cells share labels) and ``fixed`` counts everything outside the choices.
    Evaluated on a sample (``{label: op}``) it is that network's size; under
    :class:`~nni.nas.oneshot.pytorch.profiler.ExpectationProfilerPenalty` (``{label: {op: p}}``) its
    expectation, linear in the probabilities. NNI's own ``NumParamsProfiler`` needs shape inference
    for every module and fails on ``nn.Identity`` (the skip connection).
    """

    def __init__(self, model_space: nn.Module) -> None:
        per_label: dict[str, dict[str, int]] = {}
        in_choices: set[int] = set()
        seen: set[int] = set()
        for module in model_space.modules():
            if not isinstance(module, LayerChoice) or id(module) in seen:
                continue
            seen.add(id(module))
            counts = per_label.setdefault(str(module.label), {})
            for name in module.names:
                params = [p for p in module[name].parameters() if id(p) not in in_choices]
                in_choices.update(id(p) for p in params)
                counts[name] = counts.get(name, 0) + sum(p.numel() for p in params)
        fixed = sum(p.numel() for p in model_space.parameters() if id(p) not in in_choices)
        super().__init__(model_space, per_label, fixed)


def expected_cost_penalty(profiler: ExpressionProfiler, budget: float, scale: float = 1.0) -> ExpectationProfilerPenalty:
    """NNI's ``ExpectationProfilerPenalty`` on ``profiler``'s expectation:
    ``loss + scale * max(E[cost] / budget - 1, 0)`` (nothing below the budget)."""
    if budget <= 0:
        raise ValueError(f"a budget must be positive, got {budget}")
    return ExpectationProfilerPenalty(profiler, baseline=float(budget), scale=float(scale), nonlinear="positive",
                                      aggregate="add")


class PenaltySum(ExpectationProfilerPenalty):
    """Several penalties added to one loss (a parameter budget and a latency budget, say), as one
    ``ExpectationProfilerPenalty``, which is what NNI's one-shot modules take. The details of part
    ``name`` are logged as ``name_<key>``."""

    def __init__(self, parts: Mapping[str, ExpectationProfilerPenalty]) -> None:
        if not parts:
            raise ValueError("PenaltySum needs at least one penalty")
        first = next(iter(parts.values()))
        super().__init__(first.profiler, first.baseline, first.scale, nonlinear=first.nonlinear, aggregate=first.aggregate)
        self.parts = nn.ModuleDict(dict(parts))

    def forward(self, loss: Tensor, sample: Mapping[str, Any]) -> tuple[Tensor, dict]:
        details: dict[str, Any] = {}
        for name, part in self.parts.items():
            loss, own = part(loss, sample)
            details.update({f"{name}_{key}": value for key, value in own.items()})
        return loss, details


def parameter_budget_penalty(model_space: nn.Module, budget: float, scale: float = 1.0) -> ExpectationProfilerPenalty:
    """NNI's ``ExpectationProfilerPenalty`` on the expected parameter count of ``model_space``:
    ``loss + scale * max(E[params] / budget - 1, 0)`` (nothing below the budget)."""
    if budget <= 0:
        raise ValueError(f"the parameter budget must be positive, got {budget}")
    return expected_cost_penalty(ParameterCountProfiler(model_space), budget, scale)


class CooperativeBilevelLightningModule(DartsLightningModule):
    """The Lightning side of :class:`CooperativeBilevel`: Algorithm 1 in ``training_step``.

    Subclasses NNI's :class:`~nni.nas.oneshot.pytorch.differentiable.DartsLightningModule` (same
    supernet, optimiser plumbing, warm-up, probability logging and export). Every batch is a dict
    ``{"train": ..., "val": ...}`` (NNI's DARTS data loaders). Per batch and active group (in group
    order), ``inner_steps`` times:

    1. architecture step: the group's alphas follow the hypergradient of its upper loss
       ``L_val^g + beta * sum(L_val^h for the groups h after g)`` (cooperative; ``L_val^g`` alone for
       ``separate``), unrolled through one step of the group's weights on ``L_tr^g`` (or first order);
    2. weight step: the group's weights take one step of the evaluator's optimiser on ``L_tr^g``.

    Then the evaluator's learning-rate schedulers advance. A step with a non-finite loss or gradient
    is skipped with a warning; ``max_nonfinite_steps`` of them in a row raise
    :class:`NonFiniteSearchError`.

    The hypergradient's forward passes leave the model's buffers (batch-norm statistics) as they were.
    """

    def __init__(
        self,
        training_module: LightningModule,
        *,
        groups: Sequence[ChoiceGroup] | None = RUAS_GROUPS,
        beta: float = 1.0,
        unrolled: bool = True,
        schedule: str = "cooperative",
        finite_difference_r: float = 0.01,
        arc_learning_rate: float = 3.0e-4,
        arc_betas: tuple[float, float] = (0.5, 0.999),
        arc_weight_decay: float = 1.0e-3,
        gradient_clip_val: float | None = 5.0,
        log_prob_every_n_step: int = 10,
        warmup_epochs: int = 0,
        penalty: ExpectationProfilerPenalty | None = None,
        max_nonfinite_steps: int = 5,
    ) -> None:
        super().__init__(
            training_module,
            arc_learning_rate=arc_learning_rate,
            gradient_clip_val=gradient_clip_val,
            log_prob_every_n_step=log_prob_every_n_step,
            warmup_epochs=warmup_epochs,
            penalty=penalty,
        )
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
        if finite_difference_r <= 0:
            raise ValueError(f"finite_difference_r must be positive, got {finite_difference_r}")
        if max_nonfinite_steps < 1:
            raise ValueError(f"max_nonfinite_steps must be at least 1, got {max_nonfinite_steps}")
        self.group_specs: tuple[ChoiceGroup, ...] = tuple(groups or ())
        names = [g.name for g in self.group_specs]
        if len(set(names)) != len(names):
            raise ValueError(f"choice group names must be distinct, got {names}")
        self.beta = float(beta)
        self.unrolled = bool(unrolled)
        self.schedule = schedule
        self.finite_difference_r = float(finite_difference_r)
        self.arc_betas = tuple(arc_betas)
        self.arc_weight_decay = float(arc_weight_decay)
        self.max_nonfinite_steps = int(max_nonfinite_steps)
        self._resolved: list[_Group] | None = None
        self._nonfinite_in_a_row = 0

    # ----------------------------------------------------------------- architecture parameters
    def searched_module(self) -> nn.Module:
        """The model space (``training_module.model``), or the whole evaluator module when it keeps
        its model elsewhere. Group weight patterns match parameter names relative to it."""
        model = getattr(self.training_module, "model", None)
        return model if isinstance(model, nn.Module) else self.training_module

    def labelled_arch_parameters(self) -> dict[str, nn.Parameter]:
        """Architecture weights by label (sorted): see :func:`labelled_architecture_parameters`."""
        return labelled_architecture_parameters(self.searched_module())

    def arch_parameters(self) -> list[nn.Parameter]:
        # A deterministic order (NNI's DARTS uses a set): the optimiser state in a checkpoint must map
        # back onto the same alphas when a search resumes.
        return list(self.labelled_arch_parameters().values())

    def configure_architecture_optimizers(self) -> torch.optim.Optimizer:
        params = self.arch_parameters()
        if not params:
            raise ValueError("No architecture parameters found. Nothing to search.")
        return torch.optim.Adam(params, self.arc_learning_rate, betas=self.arc_betas, weight_decay=self.arc_weight_decay)

    # ------------------------------------------------------------------------------- groups
    def _weight_optimizer(self):
        optimizers = self.optimizers()
        if not isinstance(optimizers, list):
            optimizers = [optimizers]
        weight_optimizers = [opt for opt in optimizers if not getattr(opt, "is_arch_optimizer", False)]
        if not self.training_module.automatic_optimization:
            raise ValueError("Evaluator module with manual optimization is not compatible with one-shot algorithms.")
        if len(weight_optimizers) != 1:
            raise ValueError(f"the evaluator must configure exactly one weight optimizer, found {len(weight_optimizers)}")
        return weight_optimizers[0]

    def resolve_groups(self) -> list[_Group]:
        """Match the group patterns against the supernet: labels -> alphas, names -> weights.

        Groups whose patterns match no label are absent from this space. When none is present, one
        group ``"loss"`` owns everything (plain second-order DARTS). When some are present, every
        label and every optimised weight must belong to exactly one group.
        """
        if self._resolved is not None:
            return self._resolved
        arch = self.labelled_arch_parameters()
        raw_optimizer = getattr(self._weight_optimizer(), "optimizer", self._weight_optimizer())
        arch_ids = {id(p) for p in arch.values()}
        trainable: list[nn.Parameter] = []
        seen: set[int] = set()
        for param_group in raw_optimizer.param_groups:
            for p in param_group["params"]:
                if p.requires_grad and id(p) not in seen and id(p) not in arch_ids:
                    seen.add(id(p))
                    trainable.append(p)
        names = {id(p): name for name, p in self.searched_module().named_parameters()}

        resolved: list[_Group] = []
        owner_of_label: dict[str, str] = {}
        owner_of_weight: dict[int, str] = {}
        for spec in self.group_specs:
            labels = [label for label in arch if any(fnmatchcase(label, pat) for pat in spec.labels)]
            if not labels:
                continue
            weights = [p for p in trainable if any(fnmatchcase(names.get(id(p), ""), pat) for pat in spec.weights)]
            for label in labels:
                if label in owner_of_label:
                    raise ValueError(f"label {label!r} belongs to groups {owner_of_label[label]!r} and {spec.name!r}")
                owner_of_label[label] = spec.name
            for p in weights:
                if id(p) in owner_of_weight:
                    raise ValueError(f"weight {names.get(id(p))!r} belongs to groups "
                                     f"{owner_of_weight[id(p)]!r} and {spec.name!r}")
                owner_of_weight[id(p)] = spec.name
            resolved.append(_Group(spec.name, spec.period, spec.inner_steps, labels, [arch[x] for x in labels], weights,
                                   lower_key=spec.name))
        if resolved:
            stray_labels = [label for label in arch if label not in owner_of_label]
            if stray_labels:
                raise ValueError(f"architecture labels {stray_labels[:5]} belong to no choice group "
                                 f"({', '.join(g.name for g in resolved)}); add them to a group or search without groups")
            stray_weights = [names.get(id(p), "?") for p in trainable if id(p) not in owner_of_weight]
            if stray_weights:
                raise ValueError(f"weights {stray_weights[:5]} belong to no choice group; "
                                 "extend the groups' weight patterns or search without groups")
            for index, group in enumerate(resolved):
                group.upper_terms = [(group.name, 1.0)]
                if self.schedule == "cooperative" and self.beta != 0.0:
                    group.upper_terms += [(later.name, self.beta) for later in resolved[index + 1:]]
        else:
            resolved = [_Group(ALL_LOSSES, 1, 1, list(arch), list(arch.values()), trainable, lower_key=ALL_LOSSES,
                               upper_terms=[(ALL_LOSSES, 1.0)])]
            if self.group_specs:
                _log.info("no architecture label matches the choice groups %s: searching as second-order DARTS",
                          [g.name for g in self.group_specs])
        self._resolved = resolved
        return resolved

    # ------------------------------------------------------------------------------- losses
    def _evaluate(self, batch: Any, batch_idx: int, keys: frozenset[str] | None) -> Mapping[str, Tensor]:
        """Run the evaluator's ``training_step`` and return its losses (a tensor means ``{"loss": it}``)."""
        module = self.training_module
        request = hasattr(module, "requested_losses")
        if request:
            module.requested_losses = None if keys is None or ALL_LOSSES in keys else keys
        try:
            output = module.training_step(batch, batch_idx)
        finally:
            if request:
                module.requested_losses = None
        if isinstance(output, Tensor):
            output = {ALL_LOSSES: output}
        if not isinstance(output, Mapping):
            raise TypeError("the evaluator's training_step must return a loss tensor or a dict of losses, "
                            f"got {type(output).__name__}")
        missing = sorted(k for k in (keys or {ALL_LOSSES}) if k not in output)
        if missing:
            raise KeyError(f"the evaluator's training_step returned {sorted(output)} but the search needs {missing}: "
                           f"return {{'loss': total, '<group>': group loss, ...}}")
        return output

    def _loss_fn(self, batch: Any, batch_idx: int, terms: Sequence[tuple[str, float]], penalise: bool = False):
        keys = frozenset(k for k, _ in terms)

        def loss() -> Tensor:
            output = self._evaluate(batch, batch_idx, keys)
            total = sum(coefficient * output[key] for key, coefficient in terms)
            if penalise and self.penalty is not None:
                # differentiable probabilities: NNI's export_probs() are floats and carry no gradient
                total, details = self.penalty(total, differentiable_probs(self.searched_module()))
                self.log_dict({f"penalty/{k}": torch.as_tensor(v).detach().float() for k, v in details.items()})
            return total  # type: ignore[return-value]

        return loss

    @contextlib.contextmanager
    def _buffers_kept(self) -> Iterator[None]:
        """Restore the model's buffers (batch-norm statistics) after the hypergradient's extra passes."""
        saved = [(b, b.detach().clone()) for b in self.searched_module().buffers()]
        try:
            yield
        finally:
            with torch.no_grad():
                for buffer, value in saved:
                    buffer.copy_(value)

    # -------------------------------------------------------------------------------- steps
    def _architecture_step(self, group: _Group, train_batch: Any, val_batch: Any, batch_idx: int) -> Hypergradient:
        """Paper Algorithm 1, step 5 (IEM) / step 10 (NRM): one Adam step of the group's alphas along
        the (unrolled) hypergradient of its upper loss."""
        arch_optimizer = self.architecture_optimizers()
        self.resample()
        upper = self._loss_fn(val_batch, 2 * batch_idx, group.upper_terms, penalise=True)
        with self._buffers_kept():
            if self.unrolled and group.weights:
                raw = getattr(self._weight_optimizer(), "optimizer", None) or self._weight_optimizer()
                lower = self._loss_fn(train_batch, 2 * batch_idx + 1, [(group.lower_key, 1.0)])
                result = unrolled_hypergradient(lower, upper, group.weights, group.alphas,
                                                LowerStep.from_optimizer(raw, group.weights), r=self.finite_difference_r)
            else:
                result = first_order_hypergradient(upper, group.alphas)
        if result.finite:
            arch_optimizer.zero_grad()
            for alpha, grad in zip(group.alphas, result.grads):
                alpha.grad = grad.detach().clone()
            arch_optimizer.step()
            arch_optimizer.zero_grad()
        return result

    def _weight_step(self, group: _Group, train_batch: Any, batch_idx: int) -> tuple[Tensor, bool]:
        """Paper Algorithm 1, step 6 (IEM) / step 11 (NRM): one step of the evaluator's optimiser on
        the group's weights with the group's training loss (other weights keep ``grad = None`` and stay)."""
        optimizer = self._weight_optimizer()
        self.resample()
        loss = self._loss_fn(train_batch, 2 * batch_idx + 1, [(group.lower_key, 1.0)])()
        if not bool(torch.isfinite(loss)):
            return loss.detach(), False
        self.training_module.optimizer_zero_grad(self.trainer.current_epoch, batch_idx, optimizer)
        used = [p for p in group.weights if p.requires_grad]
        self.manual_backward(loss, inputs=used)
        grads = [p.grad for p in used if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) if grads else None
        if norm is not None and not bool(torch.isfinite(norm)):
            optimizer.zero_grad()
            return loss.detach(), False
        self.training_module.configure_gradient_clipping(optimizer, self.gradient_clip_val, None)
        self.training_module.optimizer_step(self.trainer.current_epoch, batch_idx, optimizer)
        optimizer.zero_grad()
        count_optimizer_step(self)
        return loss.detach(), True

    def _total_batches(self) -> int:
        per_epoch = self.trainer.num_training_batches
        epochs = self.trainer.max_epochs
        if not isinstance(per_epoch, int) or epochs is None or epochs < 0 or math.isinf(per_epoch):
            raise ValueError("the separate schedule needs a finite number of epochs and batches per epoch")
        return max(1, int(per_epoch) * int(epochs))

    def active_groups(self, batch_idx: int) -> list[_Group]:
        """The groups that step on this batch: by period (cooperative), or the group whose phase it is
        (separate: the batches of the whole search split evenly, group after group)."""
        groups = self.resolve_groups()
        if self.schedule == "separate" and len(groups) > 1:
            total = self._total_batches()
            position = self.trainer.current_epoch * int(self.trainer.num_training_batches) + batch_idx
            return [groups[min(len(groups) - 1, position * len(groups) // total)]]
        if len(groups) == 1:
            return groups
        return [g for g in groups if batch_idx % g.period == 0]

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        if not isinstance(batch, Mapping) or "train" not in batch or "val" not in batch:
            raise TypeError("the cooperative search expects batches {'train': ..., 'val': ...} (NNI's DARTS data loaders)")
        train_batch, val_batch = batch["train"], batch["val"]
        search_alphas = self.warmup_epochs == 0 or self.trainer.current_epoch >= self.warmup_epochs
        logs: dict[str, Tensor] = {}
        problem: str | None = None
        for group in self.active_groups(batch_idx):
            for _ in range(group.inner_steps):
                if search_alphas and group.alphas:
                    result = self._architecture_step(group, train_batch, val_batch, batch_idx)
                    logs[f"{group.name}/val_loss"] = result.upper
                    if result.lower is not None:
                        logs[f"{group.name}/train_loss"] = result.lower
                    if not result.finite:
                        problem = f"group {group.name!r}: non-finite architecture loss or hypergradient"
                        break
                if group.weights:
                    loss, ok = self._weight_step(group, train_batch, batch_idx)
                    logs[f"{group.name}/train_loss"] = loss
                    if not ok:
                        problem = f"group {group.name!r}: non-finite training loss or weight gradient"
                        break
            if problem:
                break

        self.advance_lr_schedulers(batch_idx)
        self._count_nonfinite(problem, batch_idx)

        finite_logs = {k: v for k, v in logs.items() if bool(torch.isfinite(v))}
        if finite_logs:
            self.log_dict(finite_logs, prog_bar=False)
        total = sum(v for k, v in finite_logs.items() if k.endswith("/train_loss"))
        if isinstance(total, Tensor):
            self.log("search_loss", total, prog_bar=True)
        if batch_idx % self.log_prob_every_n_step == 0:
            self.log_probs(self.export_probs())
        return {"loss": total if isinstance(total, Tensor) else torch.tensor(0.0), **logs}

    def _count_nonfinite(self, problem: str | None, batch_idx: int) -> None:
        if problem is None:
            self._nonfinite_in_a_row = 0
            return
        self._nonfinite_in_a_row += 1
        where = f"epoch {self.trainer.current_epoch}, batch {batch_idx}"
        if self._nonfinite_in_a_row >= self.max_nonfinite_steps:
            raise NonFiniteSearchError(
                f"{self._nonfinite_in_a_row} steps in a row had non-finite losses or gradients "
                f"(last at {where}: {problem})"
            )
        _log.warning("skipped the rest of the step at %s: %s (%d in a row)", where, problem, self._nonfinite_in_a_row)


class CooperativeBilevel(DARTS):
    """Cooperative bilevel search (RUAS, paper Algorithm 1) as an NNI one-shot strategy.

    A :class:`~nni.nas.strategy.DARTS` (same supernet, mutation hooks, ``alpha = 1e-3 * randn``, the
    ``{"train", "val"}`` loaders) whose Lightning module,
    :class:`CooperativeBilevelLightningModule`, alternates between groups of choices with second-order
    hypergradients. See the module documentation for the protocol with the evaluator.

    Parameters
    ----------
    groups
        The choice groups, leader first (default: RUAS's IEM then NRM, the NRM every 10th batch).
        ``None`` or a space that has none of the labels: plain second-order DARTS.
    beta
        Weight of the later groups' validation losses in a group's architecture loss (paper: 1).
    unrolled
        One-step unrolled (second-order) hypergradient; ``False``: first order.
    schedule
        ``cooperative`` (Algorithm 1) or ``separate`` (the first group to the end, then the next).
    finite_difference_r
        ``r`` of ``eps = r / ||grad_w' L_val||``.
    arc_learning_rate, arc_betas, arc_weight_decay
        The alphas' Adam (reference: 3e-4, (0.5, 0.999), 1e-3).
    gradient_clip_val
        Clip the weights' gradient norm (reference: 5); ``None``: no clipping.
    log_prob_every_n_step, warmup_epochs, penalty
        As for NNI's DARTS.
    max_nonfinite_steps
        Stop after this many steps in a row with non-finite losses or gradients (each is skipped).

    The weights' optimiser, learning-rate schedule and losses come from the evaluator; the unrolled
    step reads its learning rate, momentum and weight decay from that optimiser.
    """

    def __init__(
        self,
        *,
        groups: Sequence[ChoiceGroup] | None = RUAS_GROUPS,
        beta: float = 1.0,
        unrolled: bool = True,
        schedule: str = "cooperative",
        finite_difference_r: float = 0.01,
        arc_learning_rate: float = 3.0e-4,
        arc_betas: tuple[float, float] = (0.5, 0.999),
        arc_weight_decay: float = 1.0e-3,
        gradient_clip_val: float | None = 5.0,
        log_prob_every_n_step: int = 10,
        warmup_epochs: int = 0,
        penalty: dict | ExpectationProfilerPenalty | None = None,
        max_nonfinite_steps: int = 5,
        **kwargs: Any,
    ) -> None:
        super().__init__(arc_learning_rate=arc_learning_rate, gradient_clip_val=gradient_clip_val,
                         log_prob_every_n_step=log_prob_every_n_step, warmup_epochs=warmup_epochs, penalty=penalty, **kwargs)
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
        self.groups = tuple(groups) if groups else None
        self.beta = beta
        self.unrolled = unrolled
        self.schedule = schedule
        self.finite_difference_r = finite_difference_r
        self.arc_betas = arc_betas
        self.arc_weight_decay = arc_weight_decay
        self.max_nonfinite_steps = max_nonfinite_steps

    def configure_oneshot_module(self, training_module: LightningModule) -> CooperativeBilevelLightningModule:
        return CooperativeBilevelLightningModule(
            training_module,
            groups=self.groups,
            beta=self.beta,
            unrolled=self.unrolled,
            schedule=self.schedule,
            finite_difference_r=self.finite_difference_r,
            arc_learning_rate=self.arc_learning_rate,
            arc_betas=self.arc_betas,
            arc_weight_decay=self.arc_weight_decay,
            gradient_clip_val=self.gradient_clip_val,
            log_prob_every_n_step=self.log_prob_every_n_step,
            warmup_epochs=self.warmup_epochs,
            penalty=self.penalty,
            max_nonfinite_steps=self.max_nonfinite_steps,
        )


class SeparateSearch(CooperativeBilevel):
    """The paper's "separate" ablation (Fig. 9): search the first group (IEM) alone to the end of
    its share of the batches, then the next (NRM) with the first frozen; no cooperation (``beta`` is
    ignored). The batches of the whole search are split evenly between the groups."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["schedule"] = "separate"
        super().__init__(**kwargs)


class JointDARTS(CooperativeBilevel):
    """The paper's "naive joint" ablation: one second-order DARTS over the whole supernet with the
    summed loss (the evaluator's ``"loss"``), no groups, no alternation."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["groups"] = None
        super().__init__(**kwargs)
