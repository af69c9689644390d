import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from ruas_nni import (
    PAPER_GENOTYPE,
    Checkpoint,
    CheckpointError,
    export,
    load_checkpoint,
    load_nrm_init,
    save_checkpoint,
)

CHECKPOINTS = ("lol", "upe", "dark")
INPUTS = ("lol22_crop", "lime1_crop")


def _load_input(reference_dir, name):
    array = np.asarray(Image.open(reference_dir / "inputs" / f"{name}.png").convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None]


@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_authors_checkpoints_reproduce_reference_outputs(reference_dir, ckpt):
    net = load_checkpoint(reference_dir / f"{ckpt}.pt").build()
    assert sum(p.numel() for p in net.parameters()) == 3438
    for name in INPUTS:
        with torch.no_grad():
            out = net.enhance(_load_input(reference_dir, name))
        for stage, tensor in (("final", out.final), ("iem", out.iem)):
            expected = np.load(reference_dir / "outputs" / ckpt / f"{name}.{stage}.npy")
            ours = tensor[0].permute(1, 2, 0).numpy()
            assert ours.shape == expected.shape
            np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5, err_msg=f"{ckpt} {name} {stage}")


def test_authors_checkpoint_is_detected_and_described(reference_dir):
    ckpt = load_checkpoint(reference_dir / "lol.pt")
    assert ckpt.genotype == PAPER_GENOTYPE
    assert ckpt.metadata["source"] == "authors"


def test_denoise_weights_load_as_nrm_init(reference_dir):
    nrm = load_nrm_init(reference_dir / "denoise.pt")
    net = export(PAPER_GENOTYPE)
    net.nrm.load_state_dict(nrm)  # strict: every NRM weight is there
    assert torch.equal(net.nrm.stem.weight, nrm["stem.weight"])
    with pytest.raises(CheckpointError, match="NRM-only weight file"):
        load_checkpoint(reference_dir / "denoise.pt")


def test_own_format_round_trips(tmp_path):
    torch.manual_seed(0)
    net = export(PAPER_GENOTYPE)
    from ruas_nni import NetworkOptions

    ckpt = Checkpoint.from_network(net, PAPER_GENOTYPE, NetworkOptions(), {"trained_on": ["x"], "psnr": 17.5})
    path = save_checkpoint(ckpt, tmp_path / "model.pt")
    loaded = load_checkpoint(path)
    assert loaded.genotype == PAPER_GENOTYPE and loaded.metadata["psnr"] == 17.5
    y = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.build()(y), net.eval()(y))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left behind


class _Exploit:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": _Exploit()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    assert not (tmp_path / "PWNED").exists()


def test_garbage_truncated_and_wrong_architecture_are_named(tmp_path, reference_dir):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((reference_dir / "lol.pt").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(truncated)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(empty)
    state = torch.load(reference_dir / "lol.pt", map_location="cpu")
    state["enhance_net.iems.0.cell.c4.op.weight"] = torch.zeros(3, 3, 1, 1)
    wrong = tmp_path / "wrong.pt"
    torch.save(state, wrong)
    with pytest.raises(CheckpointError, match=r"wrong.pt: weights do not match .*iem.stages.0.e7.op.weight has shape"):
        load_checkpoint(wrong)
