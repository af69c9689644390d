"""The reference-free evaluator of the RUAS search (paper Sec. 3.2; spec Sec. 2) and its data.

* :class:`ReferenceFreeLosses`: an NNI Lightning module whose ``training_step`` returns
  ``{"loss": L_t + L_n, "iem": L_t, "nrm": L_n}`` for a batch of low-light images: the IEM loss
  ``L_t = 0.5 * MSE(t_K, y) + R(y, t_K)`` and the NRM loss ``L_n = 1e-7 * MSE(x, u_K) + TV(x)``.
  It configures the weights' optimiser of the reference (SGD, lr 0.005 cosine to 0.001, momentum
  0.9, weight decay 3e-4). It honours ``requested_losses`` (see :mod:`strategies.cooperative`): asked
  for the IEM loss alone it runs the IEM alone. ``objective="exposure_denoise"`` selects the
  objective of ``ruas-nni train`` of the same name instead (IEM: ``L_t`` plus Zero-DCE exposure and
  colour terms on ``u_K``; NRM: a self-supervised denoising loss plus TV); the default
  ``"reference"`` is the authors' losses, unchanged.
* :class:`UnpairedSearchData`: a Lightning data module over folders of unpaired low-light images
  with a reproducible train / validation split (the lower and the upper level of the search),
  random crops and flips that depend only on ``(seed, epoch, index)``, and loaders that resume
  mid-epoch where a checkpoint left off.
* :func:`search_evaluator`: both, wrapped in NNI's ``Lightning`` evaluator.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import nni
import pytorch_lightning as pl
import torch
from nni.nas.evaluator.pytorch import Lightning, LightningModule, Trainer
from torch import Tensor
from torch.utils.data import DataLoader

from ruas_nni.training.datasets import SeededShuffle, UnpairedImages, scan_folders, split_files
from ruas_nni.training.losses import (
    DENOISERS,
    EXPOSURE_MODES,
    add_exposure_denoise_iem_terms,
    denoise_loss,
    illumination_loss,
    noise_loss,
    total_variation,
)

__all__ = ["ReferenceFreeLosses", "UnpairedSearchData", "ResumableLoader", "search_evaluator"]

LOSS_KEYS = ("iem", "nrm")
OBJECTIVES = ("reference", "exposure_denoise")
"""The same objectives as ``ruas_nni.training.config.OBJECTIVES``."""


def _images(batch: Any) -> Tensor:
    """The image tensor of a batch (a tensor, or the first item of a list / tuple)."""
    if isinstance(batch, (list, tuple)):
        batch = batch[0]
    if not isinstance(batch, Tensor) or batch.ndim != 4 or batch.shape[1] != 3:
        raise TypeError(f"expected a batch of RGB images B x 3 x H x W, got {getattr(batch, 'shape', type(batch))}")
    return batch


@nni.trace
class ReferenceFreeLosses(LightningModule):
    """The RUAS search losses over a model with ``enhance(y)`` (``RUASSpace``).

    Parameters
    ----------
    learning_rate, learning_rate_min
        SGD learning rate, annealed by a cosine over the trainer's epochs to ``learning_rate_min``.
    momentum, weight_decay
        SGD momentum and weight decay (reference: 0.9, 3e-4).
    smooth_sigma
        ``None``: the authors' smoothness coefficient -0.005; a value: ``-1 / (2 sigma^2)``.
    smooth_guide
        Guide image of the smoothness weights: ``rgb`` (``g = y``, as the authors' search code) or
        ``ycbcr``.
    objective
        ``reference`` (the authors' ``L_t`` and ``L_n``) or ``exposure_denoise``; the remaining
        keyword arguments (``exposure_level`` ... ``denoise_tv_weight``) apply to the latter only and
        mean what the ``ruas-nni train`` keys of the same names mean.
    seed
        ``exposure_denoise`` with Neighbor2Neighbor: the random sub-sampling of batch ``i`` is a pure
        function of ``(seed, i)``, so the repeated evaluations of one hypergradient (``L_tr`` at
        ``w+`` and ``w-``) see the same sub-sampling and their difference is the Hessian term alone.

    With exposure normalisation on in the model (``model.exposure``), the NRM's loss is computed on
    the normalised ``u'`` (:meth:`ruas_nni.model.network.RUASForward.enhance`), as in training.
    """

    requested_losses: frozenset[str] | None = None
    """Set by the search strategy to the loss keys it is about to read; ``None`` means all."""

    def __init__(self, *, learning_rate: float = 0.005, learning_rate_min: float = 0.001, momentum: float = 0.9,
                 weight_decay: float = 3e-4, smooth_sigma: float | None = None, smooth_guide: str = "rgb",
                 objective: str = "reference", exposure_level: float = 0.5, exposure_weight: float = 1.0,
                 exposure_patch: int = 16, exposure_mode: str = "output", color_weight: float = 0.0,
                 bound_weight: float = 0.0,
                 denoiser: str = "neighbor2neighbor", denoise_weight: float = 1.0, denoise_consistency: float = 2.0,
                 denoise_tv_weight: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)}")
        if denoiser not in DENOISERS:
            raise ValueError(f"unknown denoiser {denoiser!r}; expected one of {', '.join(DENOISERS)}")
        if exposure_mode not in EXPOSURE_MODES:
            raise ValueError(f"unknown exposure mode {exposure_mode!r}; expected one of {', '.join(EXPOSURE_MODES)}")
        self.exposure_mode = exposure_mode
        self.seed = seed
        self._batch_index = 0
        self.objective = objective
        self.exposure_level = exposure_level
        self.exposure_weight = exposure_weight
        self.exposure_patch = exposure_patch
        self.color_weight = color_weight
        self.bound_weight = bound_weight
        self.denoiser = denoiser
        self.denoise_weight = denoise_weight
        self.denoise_consistency = denoise_consistency
        self.denoise_tv_weight = denoise_tv_weight
        self.learning_rate = learning_rate
        self.learning_rate_min = learning_rate_min
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.smooth_sigma = smooth_sigma
        self.smooth_guide = smooth_guide
        self.requested_losses = None

    def losses(self, y: Tensor, keys: frozenset[str] | None = None) -> dict[str, Tensor]:
        """``{"loss", "iem", "nrm"}`` for images ``y``; with ``keys`` only what they need (``"loss"`` is
        then the sum of the losses computed). The IEM loss alone runs no NRM."""
        wanted = set(LOSS_KEYS) if keys is None else set(keys) & set(LOSS_KEYS)
        model = self.model
        result: dict[str, Tensor] = {}
        if wanted == {"iem"}:
            u, illuminations = model.iem(y)
            result["iem"] = self._iem_loss(y, u, illuminations[-1], model)
        else:
            out = model.enhance(y)
            # the IEM's own loss looks at its raw output u_K, as in training; the NRM gets u' (out.iem)
            u_raw = out.iem if getattr(model, "exposure", None) is None else None
            result["iem"] = self._iem_loss(y, u_raw, out.illuminations[-1], model)
            if model.nrm is not None:
                if self.objective == "reference":
                    result["nrm"] = noise_loss(out.final, out.iem)
                else:
                    result["nrm"] = self._denoise_loss(model.nrm, out.iem, out.final)
        result["loss"] = sum(result.values())  # type: ignore[assignment]
        return result

    def _iem_loss(self, y: Tensor, u: Tensor | None, t: Tensor, model: Any) -> Tensor:
        """``L_t`` (paper Eq. 6: fidelity + smoothness) plus, for ``exposure_denoise``, the exposure
        and colour terms on the raw IEM output ``u_K`` (``None``: recomputed, ``y / t_K``)."""
        loss = illumination_loss(y, t, smooth_sigma=self.smooth_sigma, guide=self.smooth_guide)
        if self.objective == "exposure_denoise":
            loss = add_exposure_denoise_iem_terms(
                loss, y, t, u, exposure_weight=self.exposure_weight, exposure_level=self.exposure_level,
                exposure_patch=self.exposure_patch, exposure_mode=self.exposure_mode,
                color_weight=self.color_weight, bound_weight=self.bound_weight)
        return loss

    def _denoise_loss(self, nrm: Any, u: Tensor, x: Tensor) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self._batch_index)
        loss = self.denoise_weight * denoise_loss(nrm, u, self.denoiser, consistency=self.denoise_consistency,
                                                  generator=generator)
        if self.denoise_tv_weight:
            loss = loss + self.denoise_tv_weight * total_variation(x)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        self._batch_index = int(batch_idx)
        return self.losses(_images(batch), self.requested_losses)

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        result = self.losses(_images(batch))
        self.log_dict({f"val/{k}": v for k, v in result.items()})
        return result

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.learning_rate, momentum=self.momentum,
                                    weight_decay=self.weight_decay)
        epochs = self.trainer.max_epochs if self.trainer is not None and self.trainer.max_epochs else 1
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(epochs)),
                                                               eta_min=self.learning_rate_min)
        return [optimizer], [{"scheduler": scheduler, "interval": "epoch"}]


class _EpochSampler(SeededShuffle):
    """A :class:`~ruas_nni.training.datasets.SeededShuffle` that also sets its dataset's epoch (new crops every
    epoch) and can start part-way through an epoch's order."""

    def __init__(self, dataset: UnpairedImages, seed: int) -> None:
        super().__init__(len(dataset), seed)
        self.dataset = dataset
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        order = list(super().__iter__())
        start, self.start = self.start, 0
        return iter(order[start:])


class ResumableLoader(DataLoader):
    """A single-process loader over :class:`~ruas_nni.training.datasets.UnpairedImages` in a seeded order
    that Lightning can checkpoint mid-epoch (``state_dict`` / ``load_state_dict``): a resumed run
    skips the batches the interrupted one had already used and sees exactly the same data after."""

    def __init__(self, dataset: UnpairedImages, batch_size: int = 1, seed: int = 0) -> None:
        super().__init__(dataset, batch_size=batch_size, sampler=_EpochSampler(dataset, seed), num_workers=0)
        self._served = 0
        self._resume_at: tuple[int, int] | None = None

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        # A generator: this body runs at the first ``next``, after Lightning set this epoch's number.
        sampler: _EpochSampler = self.sampler  # type: ignore[assignment]
        served = 0
        if self._resume_at is not None:
            epoch, count = self._resume_at
            self._resume_at = None
            if epoch == sampler.epoch:
                served = count
                sampler.start = count * int(self.batch_size or 1)
        self._served = served
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "served": self._served}  # type: ignore[attr-defined]

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_at = (int(state["epoch"]), int(state["served"]))


@nni.trace
class UnpairedSearchData(pl.LightningDataModule):
    """Folders of unpaired low-light images, split into a training (lower level) and a validation
    (upper level) set; ``batch_size`` random ``crop`` x ``crop`` crops with random flips.

    :meth:`setup` reads every image once (and fails with a one-line :class:`UsageError` on an empty
    folder or a crop larger than every image); call it early to check the data up front.
    """

    def __init__(self, folders: Sequence[str | os.PathLike[str]], *, crop: int | None = 320, val_fraction: float = 0.5,
                 seed: int = 0, batch_size: int = 1, flip: bool = True) -> None:
        super().__init__()
        self.folders = [str(f) for f in folders]
        self.crop = crop
        self.val_fraction = val_fraction
        self.seed = seed
        self.batch_size = batch_size
        self.flip = flip
        self.train_set: UnpairedImages | None = None
        self.val_set: UnpairedImages | None = None
        self.train_files: list[Path] = []
        self.val_files: list[Path] = []

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        files = scan_folders(self.folders)
        self.train_files, self.val_files = split_files(files, self.val_fraction, self.seed)
        total, n_train, n_val = len(files), len(self.train_files), len(self.val_files)
        split = (f"the {total} images are split into {n_train} for the training split (network weights) and "
                 f"{n_val} for the validation split (architecture weights), val_fraction {self.val_fraction}")
        self.train_set = UnpairedImages(self.train_files, crop=self.crop, flip=self.flip, seed=self.seed,
                                        role=f"the search's training split ({split})")
        self.val_set = UnpairedImages(self.val_files, crop=self.crop, flip=self.flip, seed=self.seed + 1,
                                      role=f"the search's validation split ({split})")

    def train_dataloader(self) -> ResumableLoader:
        self.setup()
        return ResumableLoader(self.train_set, self.batch_size, seed=self.seed)  # type: ignore[arg-type]

    def val_dataloader(self) -> ResumableLoader:
        self.setup()
        return ResumableLoader(self.val_set, self.batch_size, seed=self.seed + 1)  # type: ignore[arg-type]


def search_evaluator(data: UnpairedSearchData, trainer: Trainer, **loss_options: Any) -> Lightning:
    """NNI's ``Lightning`` evaluator of the RUAS search: :class:`ReferenceFreeLosses` on ``data``."""
    return Lightning(ReferenceFreeLosses(**loss_options), trainer, datamodule=data)
