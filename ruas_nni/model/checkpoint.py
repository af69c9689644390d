"""Checkpoints: the project's own format and the authors' state dicts.

**Our format** (``model.pt``) is a ``torch.save`` of plain data only::

    {"format": "ruas-nni", "version": 1,
     "genotype": {"iem": [...], "nrm": [...] | None},
     "options": {...NetworkOptions...},
     "metadata": {...JSON-compatible: data, recipe, scores...},
     "state_dict": {name: tensor}}

It is read with ``torch.load(weights_only=True)``, which refuses to unpickle anything but tensors
and plain containers, so a checkpoint cannot run code when loaded.

**The authors' checkpoints** (``lol.pt``, ``upe.pt``, ``dark.pt`` of the RUAS reference code) are bare
state dicts of the paper genotype, keyed ``enhance_net.iems.{k}.cell.c1_d.op.weight`` and so on;
they are recognised by their keys and renamed to ours. Their ``denoise.pt`` (keys without the
``denoise_net.`` prefix) holds NRM-only initial weights.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import torch

from ..base.atomic import atomic_write
from ..base.errors import UsageError
from .export import NetworkOptions, export
from .genotype import PAPER_GENOTYPE, Genotype
from .network import EDGE_NAMES, RUASNet
from .tone import ToneOptions

__all__ = [
    "CheckpointError",
    "Checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "load_nrm_init",
    "authors_to_ours",
]

FORMAT = "ruas-nni"
VERSION = 1

# The authors' cell edges, in the order e1..e7, and their fuse convolution.
AUTHORS_EDGES = ("c1_d", "c1_r", "c2_d", "c2_r", "c3_d", "c3_r", "c4")
_EDGE_RENAME = dict(zip(AUTHORS_EDGES, EDGE_NAMES)) | {"c5": "fuse"}
_AUTHORS_IEM = re.compile(r"^enhance_net\.iems\.(\d+)\.cell\.(c\d(?:_[dr])?)\.(.+)$")
_AUTHORS_NRM_CELL = re.compile(r"^nrms\.(\d+)\.(c\d(?:_[dr])?)\.(.+)$")
_AUTHORS_NRM_OTHER = {"stem.weight": "stem.weight", "stem.bias": "stem.bias",
                      "activate.0.weight": "head.weight", "activate.0.bias": "head.bias"}


class CheckpointError(UsageError, ValueError):
    """A checkpoint file that cannot be used; the message names the file and what was expected."""


@dataclass
class Checkpoint:
    """A network's architecture, options, weights and metadata."""

    genotype: Genotype
    options: NetworkOptions = field(default_factory=NetworkOptions)
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def build(self) -> RUASNet:
        """The plain-PyTorch network with these weights, in evaluation mode."""
        net = export(self.genotype, self.options)
        problem = _mismatch(net.state_dict(), self.state_dict)
        if problem:
            raise CheckpointError(f"weights do not fit the architecture: {problem}")
        net.load_state_dict(self.state_dict)
        return net.eval()

    def with_exposure(self, exposure: float | None = None, gamma: float | None = None) -> Checkpoint:
        """The same model with exposure normalisation ``E`` = ``exposure`` (0 = off) and / or its tone
        curve ``gamma`` instead of its own (``None``: keep). A model without normalisation of its own
        gets the shoulder policy (:mod:`ruas_nni.model.tone`, default options), which never clips; a
        model with its own keeps its policy."""
        options = self.options
        if exposure is not None:
            tone = options.tone if options.exposure is not None else ToneOptions()
            options = replace(options, exposure=float(exposure) if exposure > 0 else None,
                              tone=tone if exposure > 0 else None)
        if gamma is not None:
            options = replace(options, exposure_gamma=float(gamma))
        return replace(self, options=options)

    @classmethod
    def from_network(cls, net: RUASNet, genotype: Genotype, options: NetworkOptions,
                     metadata: Mapping[str, Any] | None = None) -> Checkpoint:
        state = {k: v.detach().to("cpu", torch.float32).clone() for k, v in net.state_dict().items()}
        return cls(genotype, options, state, dict(metadata or {}))


def authors_to_ours(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of an authors' full checkpoint (IEM + NRM) to ours."""
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        match = _AUTHORS_IEM.match(key)
        if match:
            stage, edge, rest = match.groups()
            renamed[f"iem.stages.{stage}.{_EDGE_RENAME[edge]}.{rest}"] = value
            continue
        if key.startswith("denoise_net."):
            renamed.update(_rename_authors_nrm({key[len("denoise_net."):]: value}))
            continue
        raise KeyError(key)
    return renamed


def _rename_authors_nrm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        match = _AUTHORS_NRM_CELL.match(key)
        if match:
            cell, edge, rest = match.groups()
            renamed[f"nrm.cells.{cell}.{_EDGE_RENAME[edge]}.{rest}"] = value
        elif key in _AUTHORS_NRM_OTHER:
            renamed[f"nrm.{_AUTHORS_NRM_OTHER[key]}"] = value
        else:
            raise KeyError(key)
    return renamed


def _torch_load(path: Path) -> Any:
    """``torch.load`` that only accepts plain data; every failure becomes a :class:`CheckpointError`."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a checkpoint file (.pt)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, expected a checkpoint (.pt)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols of foreign files
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unpickling refused"
        raise CheckpointError(
            f"{path}: refused: the file holds Python objects other than tensors and plain data "
            f"({first[:160]}); only weights can be loaded"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any failure to parse an untrusted file is the file's fault
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {str(exc)[:160]})") from None


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Load our format or an authors' checkpoint (detected by its keys)."""
    path = Path(path)
    data = _torch_load(path)
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: expected a dict of weights, found {type(data).__name__}")
    if data.get("format") == FORMAT:
        return _from_ours(path, data)
    if data and all(isinstance(k, str) for k in data) and any(k.startswith("enhance_net.iems.") for k in data):
        return _from_authors(path, data)
    if data and all(isinstance(k, str) for k in data) and any(k.startswith("nrms.") for k in data):
        raise CheckpointError(
            f"{path}: this is an NRM-only weight file (the authors' denoise.pt); "
            "use it as NRM initial weights (`init_nrm`), not as a model", keys=("init_nrm",)
        )
    raise CheckpointError(
        f"{path}: not a RUAS checkpoint: expected a ruas-nni model.pt or an authors' state dict "
        "with 'enhance_net.iems.*' keys"
    )


def _from_authors(path: Path, data: Mapping[str, Any]) -> Checkpoint:
    try:
        state = authors_to_ours(data)
    except KeyError as exc:
        raise CheckpointError(f"{path}: unexpected key {exc.args[0]!r} for an authors' RUAS checkpoint") from None
    stages = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("iem.stages."))
    cells = [int(k.split(".")[2]) for k in state if k.startswith("nrm.cells.")]
    options = NetworkOptions(iem_stages=stages, nrm_cells=1 + max(cells) if cells else 3)
    genotype = PAPER_GENOTYPE if any(k.startswith("nrm.") for k in state) else Genotype(PAPER_GENOTYPE.iem, None)
    _check_fit(path, genotype, options, state, "the authors' paper genotype")
    metadata = {"source": "authors", "file": path.name,
                "note": "RUAS reference implementation checkpoint; 'lol' is meant for the final output, "
                        "'upe' and 'dark' for the IEM output (--stage iem)"}
    return Checkpoint(genotype, options, {k: v.float() for k, v in state.items()}, metadata)


def _from_ours(path: Path, data: Mapping[str, Any]) -> Checkpoint:
    version = data.get("version")
    if version != VERSION:
        raise CheckpointError(f"{path}: ruas-nni checkpoint version {version!r} is not supported (expected {VERSION})")
    try:
        genotype = Genotype.from_any(data["genotype"])
        options = NetworkOptions.from_dict(data.get("options"))
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: bad architecture in checkpoint: {exc}") from None
    state = data.get("state_dict")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: 'state_dict' must map names to tensors")
    _check_fit(path, genotype, options, state, "its recorded architecture")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise CheckpointError(f"{path}: 'metadata' must be a dict")
    return Checkpoint(genotype, options, {k: v.float() for k, v in state.items()}, dict(metadata))


def _check_fit(path: Path, genotype: Genotype, options: NetworkOptions,
               state: Mapping[str, torch.Tensor], what: str) -> None:
    problem = _mismatch(export(genotype, options).state_dict(), state)
    if problem:
        raise CheckpointError(f"{path}: weights do not match {what}: {problem}")


def _mismatch(reference: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str | None:
    """What keeps ``state`` from loading into a network whose state dict is ``reference`` (missing,
    unexpected or misshapen tensors), or ``None`` when it fits."""
    missing = sorted(set(reference) - set(state))
    unexpected = sorted(set(state) - set(reference))
    wrong = sorted(k for k in set(reference) & set(state) if tuple(state[k].shape) != tuple(reference[k].shape))
    parts = []
    if missing:
        parts.append(f"missing {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    if unexpected:
        parts.append(f"unexpected {unexpected[0]}" + (f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else ""))
    if wrong:
        k = wrong[0]
        parts.append(f"{k} has shape {tuple(state[k].shape)}, expected {tuple(reference[k].shape)}")
    return "; ".join(parts) or None


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike[str]) -> Path:
    """Write ``checkpoint`` in our format, atomically (temporary file, then rename)."""
    path = Path(path)
    try:
        metadata = json.loads(json.dumps(checkpoint.metadata))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint metadata must be JSON-compatible: {exc}") from None
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "genotype": checkpoint.genotype.to_dict(),
        "options": checkpoint.options.to_dict(),
        "metadata": metadata,
        "state_dict": {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in checkpoint.state_dict.items()},
    }
    with atomic_write(path) as handle:
        torch.save(payload, handle)
    return path


def load_nrm_init(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """NRM initial weights, keyed as ``RUASNet.nrm`` expects (``stem.weight``, ``cells.0.e1.op.weight`` ...).

    Accepts the authors' ``denoise.pt``, an authors' full checkpoint, or one of ours.
    """
    path = Path(path)
    data = _torch_load(path)
    if isinstance(data, Mapping) and data and any(str(k).startswith("nrms.") for k in data):
        try:
            state = _rename_authors_nrm(data)
        except KeyError as exc:
            raise CheckpointError(f"{path}: unexpected key {exc.args[0]!r} for the authors' denoise.pt") from None
    else:
        state = load_checkpoint(path).state_dict
    nrm = {k[len("nrm."):]: v.float() for k, v in state.items() if k.startswith("nrm.")}
    if not nrm:
        raise CheckpointError(f"{path}: holds no NRM weights")
    return nrm
