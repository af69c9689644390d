"""NNI's one-shot strategy contract for CooperativeBilevel, on small model spaces of the kinds NNI's
own tests use (LayerChoice, InputChoice, nni.choice-parametrised Linear / Conv2d / BatchNorm2d /
MultiheadAttention, Repeat, Cell), with NNI's Classification and Regression evaluators on tiny random
data. Wherever NNI's DARTS runs, CooperativeBilevel must run and export too, through
``strategy(RawFormatModelSpace(...), SequentialExecutionEngine())`` and through ``NasExperiment``."""

from __future__ import annotations

import nni
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from nni.nas.evaluator.pytorch import Classification, DataLoader, Regression
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.experiment import NasExperiment
from nni.nas.nn.pytorch import (
    Cell,
    InputChoice,
    LayerChoice,
    ModelSpace,
    MutableBatchNorm2d,
    MutableConv2d,
    MutableLinear,
    MutableMultiheadAttention,
    ParametrizedModule,
    Repeat,
)
from nni.nas.space import RawFormatModelSpace
from nni.nas.strategy import DARTS
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from strategies import CooperativeBilevel, CooperativeBilevelLightningModule

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------- spaces
class ChoicesNet(ModelSpace):
    """LayerChoice (convolutions, dropouts), an nni.choice hidden width, InputChoice."""

    def __init__(self, width_choice: bool = True) -> None:
        super().__init__()
        self.conv = LayerChoice([nn.Conv2d(1, 4, 3, padding=1),
                                 nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 4, 1))], label="conv")
        self.drop = LayerChoice([nn.Dropout(0.1), nn.Dropout(0.4)], label="drop")
        hidden = nni.choice("hidden", [4, 8]) if width_choice else 6
        self.fc1 = MutableLinear(4 * 4 * 4, hidden)
        self.fc2 = MutableLinear(hidden, 3)
        self.extra = nn.Linear(3, 3)
        self.pick = InputChoice(2, 1, label="pick")

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1)
        x = self.fc2(F.relu(self.fc1(self.drop(x))))
        return F.log_softmax(self.pick([x, self.extra(x)]), dim=1)


class ConvChoicesNet(ModelSpace):
    """nni.choice-parametrised Conv2d (channels, kernel) and BatchNorm2d."""

    def __init__(self) -> None:
        super().__init__()
        channels = nni.choice("channels", [2, 4])
        kernel = nni.choice("kernel", [1, 3])
        self.conv1 = MutableConv2d(1, channels, kernel, padding=kernel // 2)
        self.norm = MutableBatchNorm2d(channels)
        self.conv2 = MutableConv2d(channels, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.conv2(F.relu(self.norm(self.conv1(x))))
        return F.log_softmax(self.fc(x.mean((2, 3))), dim=1)


class RepeatNet(ModelSpace):
    """A Repeat whose depth is a choice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.blocks = Repeat(lambda index: nn.Linear(3, 3), (1, 3), label="depth")

    def forward(self, x):
        return F.log_softmax(self.blocks(self.conv(x).mean((2, 3))), dim=1)


class CellNet(ModelSpace):
    """DARTS-style cells (loose end) repeated a chosen number of times."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, stride=2, padding=1)

        def cell(index: int) -> Cell:
            def conv(kernel: int):
                def make(node, op, source):
                    inputs = (2 if index == 0 else 4) if source is not None and source < 1 else 2
                    return nn.Conv2d(inputs, 2, kernel, padding=kernel // 2)
                return make

            return Cell({"pointwise": conv(1), "spatial": conv(3)}, 2, merge_op="loose_end", label=f"cell{index}")

        self.cells = Repeat(cell, (1, 2), label="cells")
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return F.log_softmax(self.fc(self.cells(self.stem(x)).mean((2, 3))), dim=1)


class AttentionNet(ModelSpace):
    """nni.choice-parametrised MultiheadAttention (a regression space)."""

    def __init__(self) -> None:
        super().__init__()
        embed = nni.choice("embed", [4, 8])
        self.inp = MutableLinear(6, embed)
        self.attention = MutableMultiheadAttention(embed, 1)
        self.out = MutableLinear(embed, 1)

    def forward(self, batch):
        q, k, v = batch
        y, _ = self.attention(self.inp(q), self.inp(k), self.inp(v), need_weights=False)
        return self.out(y)


class UnsupportedOp(ParametrizedModule):
    """A custom parametrised module: no differentiable version exists, so DARTS refuses the space."""

    def __init__(self, channels) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x):
        return self.norm(x)


class UnsupportedNet(ModelSpace):
    def __init__(self) -> None:
        super().__init__()
        channels = nni.choice("channels", [2, 4])
        self.conv = MutableConv2d(1, channels, 3, padding=1)
        self.norm = UnsupportedOp(channels)
        self.fc = MutableLinear(channels, 3)

    def forward(self, x):
        return F.log_softmax(self.fc(self.norm(self.conv(x)).mean((2, 3))), dim=1)


SPACES = {
    "choices": ChoicesNet,
    "choices_fixed_width": lambda: ChoicesNet(width_choice=False),
    "conv_choices": ConvChoicesNet,
    "repeat": RepeatNet,
    "cell": CellNet,
    "attention": AttentionNet,
    "unsupported": UnsupportedNet,
}


class _AttentionData(Dataset):
    def __init__(self, n: int) -> None:
        generator = torch.Generator().manual_seed(n)
        self.items = [((torch.rand(1, 6, generator=generator),) * 3, torch.rand(1, 1, generator=generator))
                      for _ in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def _evaluator(name: str, root, *, max_epochs: int = 1, datamodule: bool = False, callbacks=()):
    trainer_kwargs = dict(max_epochs=max_epochs, limit_train_batches=2, enable_progress_bar=False, logger=False,
                          enable_model_summary=False, default_root_dir=str(root), callbacks=list(callbacks))
    if name == "attention":
        return Regression(train_dataloaders=DataLoader(_AttentionData(8), batch_size=4),
                          val_dataloaders=DataLoader(_AttentionData(4), batch_size=4), **trainer_kwargs)
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(12, 1, 8, 8, generator=generator), torch.randint(0, 3, (12,), generator=generator)
    train, val = TensorDataset(images[:8], labels[:8]), TensorDataset(images[8:], labels[8:])
    if datamodule:
        class Data(pl.LightningDataModule):
            def train_dataloader(self):
                return DataLoader(train, batch_size=4)

            def val_dataloader(self):
                return DataLoader(val, batch_size=4)

        return Classification(datamodule=Data(), num_classes=3, **trainer_kwargs)
    return Classification(train_dataloaders=DataLoader(train, batch_size=4), val_dataloaders=DataLoader(val, batch_size=4),
                          num_classes=3, **trainer_kwargs)


def _run_raw(strategy, name: str, root, **kwargs):
    torch.manual_seed(0)
    space = SPACES[name]()
    strategy(RawFormatModelSpace(space, _evaluator(name, root, **kwargs)), SequentialExecutionEngine())
    return strategy


def _outcome(make_strategy, name: str, root) -> str:
    try:
        strategy = _run_raw(make_strategy(), name, root)
    except TypeError as exc:
        assert "not supported" in str(exc)
        return "unsupported"
    models = list(strategy.list_models())
    assert len(models) == 1
    assert strategy.state_dict().get("ckpt_path")
    return "ok"


@pytest.mark.parametrize("name", sorted(SPACES))
def test_cooperative_runs_wherever_darts_runs(name, tmp_path):
    darts = _outcome(DARTS, name, tmp_path / "darts")
    cooperative = _outcome(CooperativeBilevel, name, tmp_path / "cooperative")
    assert cooperative == darts
    assert darts == ("unsupported" if name == "unsupported" else "ok")


class _InitialAlphas(pl.Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        self.alphas = {k: v.detach().clone() for k, v in pl_module.labelled_arch_parameters().items()}


@pytest.mark.parametrize("name", ["choices", "conv_choices", "cell"])
def test_exported_model_is_a_sample_of_the_space(name, tmp_path):
    initial = _InitialAlphas()
    strategy = _run_raw(CooperativeBilevel(), name, tmp_path, callbacks=[initial])
    model = next(strategy.list_models())
    space = SPACES[name]()
    assert sorted(model.sample) == sorted(space.simplify())
    frozen = space.freeze(model.sample)  # a fresh space: NNI's mutated Cell cannot freeze itself
    assert frozen(torch.rand(2, 1, 8, 8)).shape == (2, 3)
    # it searched: every architecture weight moved
    final = strategy.oneshot_module.labelled_arch_parameters()
    assert initial.alphas.keys() == final.keys()
    assert all(not torch.equal(initial.alphas[k], final[k].detach()) for k in final)


def test_datamodule_evaluator(tmp_path):
    strategy = _run_raw(CooperativeBilevel(), "choices", tmp_path, datamodule=True)
    assert len(list(strategy.list_models())) == 1 and strategy.state_dict().get("ckpt_path")


@pytest.mark.parametrize("name", ["choices", "repeat"])
def test_through_nas_experiment(name, tmp_path):
    torch.manual_seed(0)
    experiment = NasExperiment(SPACES[name](), _evaluator(name, tmp_path / "trainer"), CooperativeBilevel())
    experiment.config.experiment_working_directory = str(tmp_path / "experiments")
    try:
        experiment.run()
        top = experiment.export_top_models(formatter="dict")
    finally:
        experiment.stop()
    assert len(top) == 1 and sorted(top[0]) == sorted(SPACES[name]().simplify())


def test_resume_from_the_strategy_state_equals_an_uninterrupted_run(tmp_path):
    def labelled(strategy):
        return {k: v.detach().clone() for k, v in strategy.oneshot_module.labelled_arch_parameters().items()}

    straight = _run_raw(CooperativeBilevel(), "conv_choices", tmp_path / "straight", max_epochs=2)

    first = _run_raw(CooperativeBilevel(), "conv_choices", tmp_path / "first", max_epochs=1)
    state = first.state_dict()
    assert state["ckpt_path"]
    torch.manual_seed(123)  # a fresh process would start elsewhere: the checkpoint must carry everything
    second = CooperativeBilevel()
    second.initialize(RawFormatModelSpace(ConvChoicesNet(), _evaluator("conv_choices", tmp_path / "second", max_epochs=2)),
                      SequentialExecutionEngine())
    second.load_state_dict(state)
    second.run()
    expected, resumed = labelled(straight), labelled(second)
    assert expected.keys() == resumed.keys()
    for label in expected:
        torch.testing.assert_close(resumed[label], expected[label], rtol=1e-5, atol=1e-7)
    assert not all(torch.equal(labelled(first)[k], expected[k]) for k in expected)  # epoch 2 changed something


def test_lightning_module_with_a_partial_optimizer_and_a_scheduler():
    """As NNI tests DartsLightningModule: the evaluator's optimizer covers one layer only, with StepLR."""
    rates: list[float] = []

    class Net(ModelSpace):
        def __init__(self) -> None:
            super().__init__()
            self.layer1 = nn.Linear(8, 2)
            self.layer2 = LayerChoice([nn.Linear(2, 2), nn.Linear(2, 2, bias=False)], label="layer")

        def forward(self, x):
            return self.layer2(self.layer1(x))

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = Net()

        def forward(self, x):
            return self.net(x)

        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.net.layer1.parameters(), lr=0.1)
            return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.1)]

        def training_step(self, batch, batch_idx):
            return {"loss": self(batch[0]).sum()}

        def on_train_epoch_start(self) -> None:
            rates.append(self.optimizers()[0].param_groups[0]["lr"])

    torch.manual_seed(0)
    module = Module()
    DARTS().mutate_model(module.net)
    oneshot = CooperativeBilevelLightningModule(module, gradient_clip_val=5)
    data = TensorDataset(torch.rand(16, 8))
    trainer = pl.Trainer(max_epochs=6, enable_progress_bar=False, logger=False, enable_checkpointing=False,
                         enable_model_summary=False)
    trainer.fit(oneshot, {"train": DataLoader(data, batch_size=8), "val": DataLoader(data, batch_size=8)})
    assert rates == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    (group,) = oneshot.resolve_groups()
    assert {id(p) for p in group.weights} == {id(p) for p in module.net.layer1.parameters()}
