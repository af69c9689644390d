"""Which batch each level of the search consumes.

Paper Algorithm 1 and NNI's ``DartsLightningModule``: the architecture (upper level) follows the
loss on the *validation* batch, the weights (lower level) are trained on the *training* batch. The
tests feed constant images, a different value for each side (and, through the data module, for each
file), and record what the evaluator's forward sees at every call.
"""

from __future__ import annotations

import nni
import numpy as np
import pytest
import torch
from nni.nas.evaluator.pytorch import DataLoader, Lightning, Trainer
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.space import RawFormatModelSpace
from PIL import Image
from torch.utils.data import TensorDataset

from search_spaces import RUASSpace
from search_spaces.evaluator import ReferenceFreeLosses, UnpairedSearchData
from strategies import CooperativeBilevel, JointDARTS, SeparateSearch, ruas_groups

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN_VALUE, VAL_VALUE = 0.125, 0.625
IEM, BOTH, NRM, ALL = frozenset({"iem"}), frozenset({"iem", "nrm"}), frozenset({"nrm"}), None


@nni.trace
class SeeingLosses(ReferenceFreeLosses):
    """The RUAS evaluator, recording ``(requested losses, batch value, batch_idx)`` of every call."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seen: list[tuple[frozenset[str] | None, float, int]] = []

    def training_step(self, batch, batch_idx):
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        values = images.unique()
        assert values.numel() == 1, "each batch is one constant image"
        self.seen.append((self.requested_losses, round(float(values), 4), batch_idx))
        return super().training_step(batch, batch_idx)


def _search(strategy, tmp_path, batches: int = 2) -> SeeingLosses:
    train = DataLoader(TensorDataset(torch.full((4, 3, 12, 12), TRAIN_VALUE)), batch_size=1)
    val = DataLoader(TensorDataset(torch.full((4, 3, 12, 12), VAL_VALUE)), batch_size=1)
    trainer = Trainer(max_epochs=1, limit_train_batches=batches, enable_progress_bar=False, logger=False,
                      enable_checkpointing=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    module = SeeingLosses()
    torch.manual_seed(0)
    space = RUASSpace(iem_stages=1, nrm_cells=1, nrm_channels=3)
    strategy(RawFormatModelSpace(space, Lightning(module, trainer, train_dataloaders=train, val_dataloaders=val)),
             SequentialExecutionEngine())
    return module


T, V = TRAIN_VALUE, VAL_VALUE


def _unrolled(lower_key, upper_keys, b):
    """One architecture step (unrolled: L_tr at w, L_val at w', L_tr at w+ and w-) then one weight step."""
    return [(lower_key, T, 2 * b + 1), (upper_keys, V, 2 * b), (lower_key, T, 2 * b + 1), (lower_key, T, 2 * b + 1),
            (lower_key, T, 2 * b + 1)]


def test_cooperative_upper_level_reads_validation_and_lower_level_training(tmp_path):
    module = _search(CooperativeBilevel(groups=ruas_groups(nrm_period=2)), tmp_path, batches=3)
    expected = (_unrolled(IEM, BOTH, 0) + _unrolled(NRM, NRM, 0)  # batch 0: IEM, then NRM
                + _unrolled(IEM, BOTH, 1)  # batch 1: IEM only
                + _unrolled(IEM, BOTH, 2) + _unrolled(NRM, NRM, 2))
    assert module.seen == expected


def test_first_order_upper_level_reads_validation(tmp_path):
    module = _search(CooperativeBilevel(groups=ruas_groups(nrm_period=1), unrolled=False), tmp_path, batches=2)
    step = [(IEM, BOTH), (NRM, NRM)]
    expected = []
    for b in range(2):
        for lower, upper in step:
            expected += [(upper, V, 2 * b), (lower, T, 2 * b + 1)]
    assert module.seen == expected


def test_joint_darts_upper_level_reads_validation(tmp_path):
    module = _search(JointDARTS(), tmp_path, batches=2)
    assert module.seen == _unrolled(ALL, ALL, 0) + _unrolled(ALL, ALL, 1)


def test_separate_search_upper_level_reads_validation(tmp_path):
    module = _search(SeparateSearch(), tmp_path, batches=2)
    assert module.seen == _unrolled(IEM, IEM, 0) + _unrolled(NRM, NRM, 1)


def test_nni_darts_itself_reads_the_same_way(tmp_path):
    """The contract the strategy follows, as NNI's own DARTS does it (first order)."""
    from nni.nas.strategy import DARTS

    module = _search(DARTS(), tmp_path, batches=2)
    assert [(value, idx) for _, value, idx in module.seen] == [(V, 0), (T, 1), (V, 2), (T, 3)]


def test_search_data_feeds_training_files_to_the_weights_and_validation_files_to_the_alphas(tmp_path):
    """Through the project's data module: each file is one constant grey, so every batch names its
    file; lower-level calls must see only training files, upper-level calls only validation files."""
    folder = tmp_path / "images"
    folder.mkdir()
    value_of = {}
    for index in range(6):
        grey = 20 + 30 * index
        path = folder / f"img{index}.png"
        Image.fromarray(np.full((20, 24, 3), grey, dtype=np.uint8)).save(path)
        value_of[path.name] = round(grey / 255, 4)
    data = UnpairedSearchData([folder], crop=12, val_fraction=0.5, seed=3, batch_size=1)
    data.setup()
    train_values = {value_of[p.name] for p in data.train_files}
    val_values = {value_of[p.name] for p in data.val_files}
    assert len(train_values) == 3 and len(val_values) == 3 and not train_values & val_values

    module = SeeingLosses()
    trainer = Trainer(max_epochs=1, limit_train_batches=3, enable_progress_bar=False, logger=False,
                      enable_checkpointing=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    torch.manual_seed(0)
    space = RUASSpace(iem_stages=1, nrm_cells=1, nrm_channels=3)
    CooperativeBilevel(groups=ruas_groups(nrm_period=1))(
        RawFormatModelSpace(space, Lightning(module, trainer, datamodule=data)), SequentialExecutionEngine())

    upper = [value for keys, value, idx in module.seen if idx % 2 == 0]
    lower = [value for keys, value, idx in module.seen if idx % 2 == 1]
    assert len(upper) == 6 and len(lower) == 24
    assert set(upper) <= val_values, (upper, val_values)
    assert set(lower) <= train_values, (lower, train_values)
    # Each batch index's calls read one image, and three batches visit three different ones.
    assert len(set(upper)) == 3 and len(set(lower)) == 3
