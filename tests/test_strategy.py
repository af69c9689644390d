"""CooperativeBilevel on RUASSpace: Algorithm 1's alternation, the ablations, the loss protocol,
non-finite steps; and the reference-free evaluator and its resumable data."""

from __future__ import annotations

import logging
import math

import nni
import pytest
import torch
from nni.nas.evaluator.pytorch import DataLoader, Lightning, Trainer
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.space import RawFormatModelSpace
from pytorch_lightning import Callback
from torch.utils.data import TensorDataset

import strategies.cooperative as cooperative
from search_spaces import RUASSpace
from search_spaces.evaluator import ReferenceFreeLosses, ResumableLoader, UnpairedSearchData
from strategies import (
    ChoiceGroup,
    CooperativeBilevel,
    JointDARTS,
    NonFiniteSearchError,
    SeparateSearch,
    ruas_groups,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@nni.trace
class RecordingLosses(ReferenceFreeLosses):
    """The RUAS evaluator, recording which losses each call was asked for; NaN on ``poison`` batches."""

    def __init__(self, poison: tuple[int, ...] = (), **kwargs) -> None:
        super().__init__(**kwargs)
        self.poison = tuple(poison)
        self.requests: list[frozenset[str] | None] = []

    def training_step(self, batch, batch_idx):
        self.requests.append(self.requested_losses)
        losses = super().training_step(batch, batch_idx)
        if batch_idx // 2 in self.poison:
            losses = {k: v * math.nan for k, v in losses.items()}
        return losses


class Snapshots(Callback):
    """The alphas and weights of each module before training and after every batch."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def _snap(self, pl_module) -> None:
        space = pl_module.model
        state = {label: p.detach().clone() for label, p in pl_module.labelled_arch_parameters().items()}
        arch = {id(p) for p in pl_module.labelled_arch_parameters().values()}
        for module in ("iem", "nrm"):
            state[f"w:{module}"] = torch.cat([p.detach().reshape(-1) for n, p in space.named_parameters()
                                              if n.startswith(module + ".") and id(p) not in arch])
        self.states.append(state)

    def on_train_start(self, trainer, pl_module) -> None:
        self._snap(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._snap(pl_module)

    def changed(self, batch: int, prefix: str) -> bool:
        """Whether anything starting with ``prefix`` changed during ``batch``."""
        before, after = self.states[batch], self.states[batch + 1]
        return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


def _search(strategy, tmp_path, *, batches=3, epochs=1, evaluator=None, callbacks=(), seed=0):
    torch.manual_seed(seed)
    images = torch.rand(8, 3, 16, 16) * 0.3
    train = DataLoader(TensorDataset(images[:5]), batch_size=1)
    val = DataLoader(TensorDataset(images[5:]), batch_size=1)
    trainer = Trainer(max_epochs=epochs, limit_train_batches=batches, enable_progress_bar=False, logger=False,
                      enable_checkpointing=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                      callbacks=list(callbacks))
    module = evaluator if evaluator is not None else RecordingLosses()
    space = RUASSpace(iem_stages=1, nrm_cells=1, nrm_channels=3)
    strategy(RawFormatModelSpace(space, Lightning(module, trainer, train_dataloaders=train, val_dataloaders=val)),
             SequentialExecutionEngine())
    return strategy, module


def test_cooperative_steps_iem_every_batch_and_nrm_every_period(tmp_path):
    snaps = Snapshots()
    strategy, _ = _search(CooperativeBilevel(groups=ruas_groups(nrm_period=2)), tmp_path, batches=4, callbacks=[snaps])
    assert [snaps.changed(b, "iem/") for b in range(4)] == [True] * 4
    assert [snaps.changed(b, "w:iem") for b in range(4)] == [True] * 4
    assert [snaps.changed(b, "nrm/") for b in range(4)] == [True, False, True, False]
    assert [snaps.changed(b, "w:nrm") for b in range(4)] == [True, False, True, False]
    groups = strategy.oneshot_module.resolve_groups()
    assert [g.name for g in groups] == ["iem", "nrm"]
    assert [len(g.alphas) for g in groups] == [7, 7]
    assert groups[0].upper_terms == [("iem", 1.0), ("nrm", 1.0)] and groups[1].upper_terms == [("nrm", 1.0)]
    model = next(strategy.list_models())
    assert sorted(model.sample) == sorted(f"{m}/e{i}" for m in ("iem", "nrm") for i in range(1, 8))


def test_the_strategy_asks_for_the_losses_of_algorithm_1(tmp_path, monkeypatch):
    """Step 5: alpha_t along the unrolled hypergradient of L_val^t + beta L_val^n through one SGD step
    of w_t on L_tr^t (the optimiser's lr, momentum, weight decay); step 6: w_t on L_tr^t. Step 10 and
    11 likewise for the NRM with L^n alone."""
    calls = []
    real = cooperative.unrolled_hypergradient

    def spy(lower, upper, weights, alphas, step, **kwargs):
        calls.append((len(weights), len(alphas), step))
        return real(lower, upper, weights, alphas, step, **kwargs)

    monkeypatch.setattr(cooperative, "unrolled_hypergradient", spy)
    strategy, module = _search(CooperativeBilevel(beta=0.5), tmp_path, batches=2)
    iem, nrm = strategy.oneshot_module.resolve_groups()
    assert iem.upper_terms == [("iem", 1.0), ("nrm", 0.5)]
    space = strategy.oneshot_module.model
    arch = {id(p) for p in strategy.oneshot_module.arch_parameters()}
    iem_weights = [p for n, p in space.named_parameters() if n.startswith("iem.") and id(p) not in arch]
    assert [id(p) for p in iem.weights] == [id(p) for p in iem_weights]
    # batch 0: IEM (lower, upper, w+, w-, weight step) then NRM (the same); batch 1: IEM only.
    iem_call = [frozenset({"iem"}), frozenset({"iem", "nrm"}), frozenset({"iem"}), frozenset({"iem"}), frozenset({"iem"})]
    nrm_call = [frozenset({"nrm"})] * 5
    assert module.requests == iem_call + nrm_call + iem_call
    assert [(n_w, n_a) for n_w, n_a, _ in calls] == [(len(iem_weights), 7), (len(nrm.weights), 7), (len(iem_weights), 7)]
    step = calls[2][2]  # the second IEM step: momentum buffers exist now
    assert set(step.lrs) == {0.005} and set(step.momentums) == {0.9} and set(step.weight_decays) == {3e-4}
    assert all(b is not None for b in step.momentum_buffers)


def test_beta_zero_and_first_order(tmp_path):
    strategy, module = _search(CooperativeBilevel(beta=0.0, unrolled=False), tmp_path, batches=1)
    iem, nrm = strategy.oneshot_module.resolve_groups()
    assert iem.upper_terms == [("iem", 1.0)]
    # first order: one upper evaluation and one weight step per group
    assert module.requests == [frozenset({"iem"})] * 2 + [frozenset({"nrm"})] * 2


def test_separate_searches_iem_then_nrm(tmp_path):
    snaps = Snapshots()
    _search(SeparateSearch(), tmp_path, batches=4, callbacks=[snaps])
    assert [snaps.changed(b, "iem/") or snaps.changed(b, "w:iem") for b in range(4)] == [True, True, False, False]
    assert [snaps.changed(b, "nrm/") or snaps.changed(b, "w:nrm") for b in range(4)] == [False, False, True, True]


def test_joint_is_one_second_order_darts_over_everything(tmp_path):
    snaps = Snapshots()
    strategy, module = _search(JointDARTS(), tmp_path, batches=1, callbacks=[snaps])
    (group,) = strategy.oneshot_module.resolve_groups()
    assert group.name == "loss" and len(group.alphas) == 14
    assert all(not torch.equal(snaps.states[0][k], snaps.states[1][k]) for k in snaps.states[0])
    assert set(module.requests) == {None}  # the total loss: nothing to skip


def test_groups_that_match_nothing_fall_back_to_darts(tmp_path):
    strategy, _ = _search(CooperativeBilevel(groups=[ChoiceGroup("a", ("a/*",), ("a.*",))]), tmp_path, batches=1)
    (group,) = strategy.oneshot_module.resolve_groups()
    assert group.name == "loss" and len(group.alphas) == 14


def test_labels_outside_every_group_are_an_error(tmp_path):
    with pytest.raises(ValueError, match="belong to no choice group"):
        _search(CooperativeBilevel(groups=[ChoiceGroup("iem", ("iem/*",), ("iem.*",))]), tmp_path, batches=1)


def test_a_non_finite_step_is_skipped(tmp_path, caplog):
    snaps = Snapshots()
    with caplog.at_level(logging.WARNING, logger="strategies.cooperative"):
        _search(CooperativeBilevel(), tmp_path, batches=3, evaluator=RecordingLosses(poison=(1,)), callbacks=[snaps])
    assert "non-finite" in caplog.text
    assert not snaps.changed(1, "")  # nothing moved on the poisoned batch
    assert snaps.changed(2, "iem/")
    assert all(torch.isfinite(v).all() for v in snaps.states[-1].values())


def test_repeated_non_finite_steps_stop_the_search(tmp_path):
    snaps = Snapshots()
    with pytest.raises(NonFiniteSearchError, match="3 steps in a row"):
        _search(CooperativeBilevel(max_nonfinite_steps=3), tmp_path, batches=3, epochs=3,
                evaluator=RecordingLosses(poison=(1, 2, 0)), callbacks=[snaps])
    # batch 0 of epoch 0 is poisoned too (0 in poison): 0, 1, 2 -> stop after the third
    assert len(snaps.states) == 1 + 2


# ------------------------------------------------------------------------------- evaluator
def test_reference_free_losses_skip_the_nrm_when_asked():
    module = ReferenceFreeLosses()
    space = RUASSpace(iem_stages=1, nrm_cells=1, nrm_channels=3)
    module.set_model(space)
    y = torch.rand(1, 3, 12, 12) * 0.3
    full = module.losses(y)
    assert set(full) == {"loss", "iem", "nrm"}
    assert torch.allclose(full["loss"], full["iem"] + full["nrm"])
    space.nrm.forward = None  # would fail if called
    only_iem = module.losses(y, frozenset({"iem"}))
    assert set(only_iem) == {"loss", "iem"} and torch.equal(only_iem["iem"], full["iem"])


def test_search_data_split_and_resumable_loader(demo_data):
    data = UnpairedSearchData([demo_data.train], crop=16, val_fraction=0.5, seed=3)
    data.setup()
    assert set(data.train_files).isdisjoint(data.val_files) and data.train_files and data.val_files
    loader = data.train_dataloader()
    assert isinstance(loader, ResumableLoader)
    loader.sampler.set_epoch(2)
    full = [b for b in loader]
    assert all(b.shape == (1, 3, 16, 16) for b in full)
    iterator = iter(loader)
    next(iterator), next(iterator)
    state = loader.state_dict()
    assert state == {"epoch": 2, "served": 2}

    resumed = UnpairedSearchData([demo_data.train], crop=16, val_fraction=0.5, seed=3).train_dataloader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)
    rest = [b for b in resumed]
    assert len(rest) == len(full) - 2 and all(torch.equal(a, b) for a, b in zip(rest, full[2:]))
    # a saved position belongs to its epoch only
    other = UnpairedSearchData([demo_data.train], crop=16, val_fraction=0.5, seed=3).train_dataloader()
    other.load_state_dict(state)
    other.sampler.set_epoch(3)
    assert len(list(other)) == len(full)
