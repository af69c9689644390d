"""The LightningModule that trains :class:`~ruas_nni.model.network.RUASNet` with the reference-free losses."""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import pytorch_lightning as pl
import torch

from ..base.config import to_yaml_dict
from ..base.errors import RuasError
from ..model.network import RUASNet
from .config import TrainConfig
from .data import StepProgress
from .losses import (
    add_exposure_denoise_iem_terms,
    denoise_loss,
    illumination_loss,
    noise_loss,
    total_variation,
)

__all__ = ["RUASTrainingModule", "TrainingDiverged"]


class TrainingDiverged(RuasError):
    """Too many non-finite losses in a row; the last good checkpoint was kept (exit status 1)."""

    exit_code = 1


def _finite(values: Sequence[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in values)


class RUASTrainingModule(pl.LightningModule):
    """Trains :class:`~ruas_nni.model.network.RUASNet` with the reference-free losses (manual optimisation:
    two SGD optimisers on their own schedules)."""

    def __init__(self, network: RUASNet, config: TrainConfig, progress: StepProgress | None = None,
                 preview: torch.Tensor | None = None) -> None:
        super().__init__()
        self.net = network
        self.config = config
        self.progress = progress if progress is not None else StepProgress()
        self.automatic_optimization = False
        self.bad_steps_in_a_row = 0
        self.skipped_steps = 0
        self.last_losses: dict[str, float] = {}
        self.register_buffer("preview", preview if preview is not None else torch.zeros(0), persistent=False)

    # -- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self):
        config = self.config
        optimizers = [torch.optim.SGD(self.net.iem.parameters(), lr=config.iem_lr, momentum=config.momentum,
                                      weight_decay=config.weight_decay)]
        if self.net.nrm is not None:
            optimizers.append(torch.optim.SGD(self.net.nrm.parameters(), lr=config.nrm_lr, momentum=config.momentum,
                                              weight_decay=config.weight_decay))
        return optimizers

    def _illumination_loss(self, y: torch.Tensor) -> torch.Tensor:
        config = self.config
        u, illuminations = self.net.iem(y)
        loss = illumination_loss(y, illuminations[-1], fidelity_weight=config.fidelity_weight,
                                 smooth_weight=config.smooth_weight, smooth_sigma=config.smooth_sigma,
                                 guide=config.smooth_guide, fidelity_gamma=config.fidelity_gamma)
        if config.objective == "exposure_denoise":
            loss = add_exposure_denoise_iem_terms(
                loss, y, illuminations[-1], u, exposure_weight=config.exposure_weight,
                exposure_level=config.exposure_level, exposure_patch=config.exposure_patch,
                exposure_mode=config.exposure_mode, color_weight=config.color_weight, bound_weight=config.bound_weight)
        return loss

    def _noise_loss(self, y: torch.Tensor, step: int = 0) -> torch.Tensor:
        with torch.no_grad():  # fresh forward with the updated IEM: nothing is differentiated through it
            u = self.net.enhance_iem(y) if self.net.exposure is not None else self.net.iem(y)[0]
        config = self.config
        if config.objective == "exposure_denoise":
            # the random sub-sampling of step s is a pure function of (seed, s): reproducible and resumable
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
            if config.denoiser == "fidelity":  # Tikhonov: one forward serves both terms
                x = self.net.nrm(u)
                return (config.denoise_weight * (x - u).pow(2).mean()
                        + config.denoise_tv_weight * total_variation(x))
            loss = config.denoise_weight * denoise_loss(self.net.nrm, u, config.denoiser,
                                                        consistency=config.denoise_consistency, generator=generator)
            if config.denoise_tv_weight:
                loss = loss + config.denoise_tv_weight * total_variation(self.net.nrm(u))
            return loss
        x = self.net.nrm(u)
        return noise_loss(x, u, fidelity_weight=config.noise_fidelity_weight, tv_weight=config.tv_weight)

    def _step(self, optimizer, loss: torch.Tensor, parameters: list[torch.nn.Parameter]) -> bool:
        """Backward, clip, check and step; ``False`` (nothing changed) when anything is non-finite."""
        optimizer.zero_grad(set_to_none=True)
        if not _finite([loss.detach()]):
            return False
        self.manual_backward(loss)
        if self.config.grad_clip > 0:
            self.clip_gradients(optimizer, gradient_clip_val=self.config.grad_clip, gradient_clip_algorithm="norm")
        amp_scaled = str(self.trainer.precision).startswith("16")  # the scaler skips overflowing steps itself
        if not amp_scaled and not _finite([p.grad for p in parameters if p.grad is not None]):
            optimizer.zero_grad(set_to_none=True)
            return False
        optimizer.step()
        return True

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> None:
        images, steps = batch
        step = int(steps[0])
        optimizers = self.optimizers()
        if not isinstance(optimizers, (list, tuple)):
            optimizers = [optimizers]
        loss_t = self._illumination_loss(images)
        ok = self._step(optimizers[0], loss_t, list(self.net.iem.parameters()))
        losses = {"loss/iem": float(loss_t.detach())}
        if ok and self.net.nrm is not None and step % self.config.nrm_period == 0:
            loss_n = self._noise_loss(images, step)
            ok = self._step(optimizers[1], loss_n, list(self.net.nrm.parameters()))
            losses["loss/nrm"] = float(loss_n.detach())
        self._after_step(step, ok, losses)

    def _after_step(self, step: int, ok: bool, losses: dict[str, float]) -> None:
        self.progress.steps_done = step + 1
        self.last_losses = losses
        if ok:
            self.bad_steps_in_a_row = 0
            if self.logger is not None:
                # the IEM loss every log_every steps; the NRM loss whenever the (sparser) NRM step ran
                due = {k: v for k, v in losses.items() if k != "loss/iem" or (step + 1) % self.config.log_every == 0}
                if due:
                    self.logger.log_metrics(due, step=step + 1)
            return
        self.bad_steps_in_a_row += 1
        self.skipped_steps += 1
        warnings.warn(f"step {step + 1}: non-finite loss or gradient ({', '.join(f'{k}={v:g}' for k, v in losses.items())}); "
                      "step skipped", RuntimeWarning, stacklevel=2)
        if self.bad_steps_in_a_row >= self.config.max_bad_steps:
            raise TrainingDiverged(
                f"training diverged: {self.bad_steps_in_a_row} non-finite steps in a row (steps "
                f"{step + 2 - self.bad_steps_in_a_row}-{step + 1}); stopped, the last good checkpoint is kept"
            )

    # -- resumable state ------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ruas_nni"] = {"steps_done": self.progress.steps_done, "bad_steps_in_a_row": self.bad_steps_in_a_row,
                                  "skipped_steps": self.skipped_steps, "config": to_yaml_dict(self.config)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("ruas_nni", {})
        self.progress.steps_done = int(state.get("steps_done", 0))
        self.bad_steps_in_a_row = int(state.get("bad_steps_in_a_row", 0))
        self.skipped_steps = int(state.get("skipped_steps", 0))

    # -- samples for TensorBoard ----------------------------------------------------------------
    @torch.no_grad()
    def preview_picture(self) -> torch.Tensor | None:
        """``input | IEM output | final output`` of the preview image (``3 x H x 3W``), or ``None``."""
        if self.preview.numel() == 0:
            return None
        was_training = self.net.training
        self.net.eval()
        result = self.net.enhance(self.preview.unsqueeze(0).float())
        self.net.train(was_training)
        panels = [self.preview, result.iem[0], result.final[0]]
        return torch.cat([p.float().clamp(0, 1).cpu() for p in panels], dim=2)
