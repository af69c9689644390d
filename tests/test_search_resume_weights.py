"""A killed and resumed search ends with the same *supernet weights* (and optimiser state) as an
uninterrupted one, not only the same architecture probabilities (``tests/test_search_cli.py``).

Both runs leave their final state in ``checkpoints/last.ckpt`` (written at every epoch's end); the
test compares every tensor of the two: network weights, architecture weights, the weights' SGD
momentum buffers and the alphas' Adam moments.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


def _tensors(value, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor inside a nested dict / list, by path."""
    found: dict[str, torch.Tensor] = {}
    if isinstance(value, torch.Tensor):
        found[prefix] = value
    elif isinstance(value, dict):
        for key, item in value.items():
            found.update(_tensors(item, f"{prefix}/{key}"))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found.update(_tensors(item, f"{prefix}/{index}"))
    return found


def test_killed_search_resumes_to_the_same_supernet_weights(killed_search):
    """The search killed after its first checkpoint and resumed: the ``killed_search`` fixture in
    conftest.py, shared with test_search_cli.py."""
    checkpoint = killed_search["killed"] / "checkpoints" / "last.ckpt"
    interrupted = torch.load(killed_search["interrupted"], map_location="cpu", weights_only=False)
    assert killed_search["resume_exit"] == 0

    straight = torch.load(killed_search["straight"] / "checkpoints" / "last.ckpt", map_location="cpu",
                          weights_only=False)
    resumed = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert resumed["global_step"] == straight["global_step"] > interrupted["global_step"]

    weights, expected = resumed["state_dict"], straight["state_dict"]
    assert sorted(weights) == sorted(expected)
    assert any("_arch_alpha" in k for k in weights) and sum(v.numel() for v in weights.values()) > 1000
    for key in expected:
        torch.testing.assert_close(weights[key], expected[key], rtol=0, atol=1e-7, msg=lambda m, k=key: f"{k}: {m}")
    # The search moved the weights since the kill (so the comparison above is not of two copies of
    # the same early state).
    moved = max((weights[k].float() - interrupted["state_dict"][k].float()).abs().max().item()
                for k in expected if k in interrupted["state_dict"])
    assert moved > 1e-6

    optimiser, expected_optimiser = _tensors(resumed["optimizer_states"]), _tensors(straight["optimizer_states"])
    assert sorted(optimiser) == sorted(expected_optimiser) and any("momentum_buffer" in k for k in optimiser)
    for key in expected_optimiser:
        torch.testing.assert_close(optimiser[key], expected_optimiser[key], rtol=0, atol=1e-7,
                                   msg=lambda m, k=key: f"optimizer {k}: {m}")
