"""RUASSpace as an NNI model space, and NNI's own DARTS strategy on it."""

import nni
import pytest
import torch
from nni.nas.evaluator.pytorch import DataLoader, Lightning, LightningModule, Trainer
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.space import RawFormatModelSpace
from nni.nas.strategy import DARTS
from torch.utils.data import TensorDataset

from ruas_nni import PAPER_GENOTYPE, Genotype, export
from ruas_nni.model.ops import OPERATION_NAMES
from ruas_nni.training.losses import illumination_loss, noise_loss
from search_spaces import RUASSpace


def test_labels_are_shared_across_stages():
    space = RUASSpace()
    mutables = space.simplify()
    assert sorted(mutables) == sorted([f"{m}/e{i}" for m in ("iem", "nrm") for i in range(1, 8)])
    for mutable in mutables.values():
        assert list(mutable.values) == list(OPERATION_NAMES)


def test_options_shape_the_space():
    space = RUASSpace(iem_stages=2, nrm_cells=1, with_nrm=False, candidates=["skip_connect", "conv_3x3"])
    assert sorted(space.simplify()) == [f"iem/e{i}" for i in range(1, 8)]
    assert len(space.iem.stages) == 2 and space.nrm is None
    with pytest.raises(ValueError, match="candidates"):
        RUASSpace(candidates=["conv_9x9"])


def test_frozen_sample_matches_the_exported_network():
    space = RUASSpace()
    frozen = space.freeze(PAPER_GENOTYPE.to_sample())
    exported = export(PAPER_GENOTYPE)
    assert frozen.state_dict().keys() == exported.state_dict().keys()
    exported.load_state_dict(frozen.state_dict())
    y = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        assert torch.equal(frozen(y), exported(y))
    assert sum(p.numel() for p in frozen.parameters()) == 3438


SHAPES = [(1, 1, 3), (2, 3, 6), (3, 2, 12)]
"""(IEM stages, NRM cells, NRM width) samples of RUASSpace.scalable(): its smallest, one between, its widest."""


def test_the_scalable_space_searches_the_shape_with_nni_choices():
    space = RUASSpace.scalable()
    mutables = space.simplify()
    edges = [f"{m}/e{i}" for m in ("iem", "nrm") for i in range(1, 8)]
    assert sorted(mutables) == sorted(edges + ["iem/stages", "nrm/cells", "nrm/width"])
    assert [list(mutables[label].values) for label in ("iem/stages", "nrm/cells", "nrm/width")] == \
        [[1, 2, 3], [1, 2, 3], [3, 6, 12]]
    assert sorted(RUASSpace().simplify()) == sorted(edges)  # the paper's space keeps its shape
    # the shape values are checked where the space is made
    with pytest.raises(ValueError, match="nrm_channels"):
        RUASSpace(nrm_channels=nni.choice("width", [6, 0]))
    with pytest.raises(ValueError, match="iem_stages"):
        RUASSpace(iem_stages=2.5)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_a_scalable_sample_freezes_to_the_exported_network_of_its_shape(shape):
    from search_spaces.ruas import shape_of

    sample = {**PAPER_GENOTYPE.to_sample(), "iem/stages": shape[0], "nrm/cells": shape[1], "nrm/width": shape[2]}
    frozen = RUASSpace.scalable().freeze(sample)
    assert frozen.simplify() == {}  # a network, no longer a space
    assert shape_of(sample) == {"iem_stages": shape[0], "nrm_cells": shape[1], "nrm_channels": shape[2]}
    exported = export(Genotype.from_sample(sample), shape_of(sample))
    assert len(exported.iem.stages) == shape[0] and len(exported.nrm.cells) == shape[1]
    assert exported.nrm.stem.out_channels == shape[2]
    assert frozen.state_dict().keys() == exported.state_dict().keys()
    exported.load_state_dict(frozen.state_dict())
    y = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        assert torch.equal(frozen(y), exported(y))
    with pytest.raises(Exception, match="iem/stages"):  # NNI names the missing choice
        RUASSpace.scalable().freeze(PAPER_GENOTYPE.to_sample())


@nni.trace
class _LossModule(LightningModule):
    """A minimal reference-free evaluator: the RUAS losses, SGD on the weights."""

    def training_step(self, batch, batch_idx):
        (y,) = batch
        out = self.model.enhance(y)
        iem = illumination_loss(y, out.illuminations[-1])
        nrm = noise_loss(out.final, out.iem)
        self.log("train_loss", iem + nrm)
        return {"loss": iem + nrm, "iem": iem.detach(), "nrm": nrm.detach()}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.005, momentum=0.9)


@pytest.mark.usefixtures("one_thread")
def test_nni_darts_runs_on_ruas_space(tmp_path):
    torch.manual_seed(0)
    images = torch.rand(8, 3, 24, 24) * 0.2
    loader = DataLoader(TensorDataset(images), batch_size=2)
    trainer = Trainer(max_epochs=1, limit_train_batches=3, enable_progress_bar=False, logger=False,
                      enable_checkpointing=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    evaluator = Lightning(_LossModule(), trainer, train_dataloaders=loader, val_dataloaders=loader)
    strategy = DARTS()
    strategy(RawFormatModelSpace(RUASSpace(), evaluator), SequentialExecutionEngine())
    alphas = strategy._arch_parameters
    assert sorted(alphas) == sorted(RUASSpace().simplify())
    assert all(a.grad is not None for a in alphas.values())  # each shared alpha received gradients
    model = next(strategy.list_models())
    sample = model.sample
    genotype = Genotype.from_sample(sample)
    net = export(genotype)
    assert net(torch.rand(1, 3, 8, 8)).shape == (1, 3, 8, 8)
