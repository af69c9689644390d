"""Exact tiling: tiles with a halo of the receptive radius give the untiled result."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from ruas_nni.inference.enhance import Enhancer
from ruas_nni.inference.tiling import plan_tiles, run_tiled
from ruas_nni.model.checkpoint import Checkpoint
from ruas_nni.model.export import NetworkOptions, export
from ruas_nni.model.genotype import PAPER_GENOTYPE


@pytest.mark.parametrize("height,width,halo,limit,min_tiles", [
    (1, 1, 17, 1000, 1), (400, 600, 17, 330_000, 1), (400, 600, 17, 330_000, 2), (1920, 1080, 17, 330_000, 1),
    (2160, 3840, 17, 330_000, 1), (97, 1013, 5, 4000, 1), (3000, 7, 17, 5000, 3),
])
def test_tiles_cover_the_image_once_with_their_halo(height, width, halo, limit, min_tiles):
    tiles = plan_tiles(height, width, halo, limit, min_tiles)
    covered = torch.zeros(height, width, dtype=torch.int32)
    for tile in tiles:
        covered[tile.core_top:tile.core_bottom, tile.core_left:tile.core_right] += 1
        assert tile.top == max(0, tile.core_top - halo) and tile.bottom == min(height, tile.core_bottom + halo)
        assert tile.left == max(0, tile.core_left - halo) and tile.right == min(width, tile.core_right + halo)
        if len(tiles) > 1:
            assert tile.pixels <= max(limit, (2 * halo + 16) ** 2) * 1.1
    assert bool((covered == 1).all())
    if height * width > limit:
        assert len(tiles) > 1
    if min_tiles > 1 and height >= 4 * halo * min_tiles:
        assert len(tiles) >= min_tiles


def _paper_checkpoint(seed: int = 0) -> Checkpoint:
    torch.manual_seed(seed)
    network = export(PAPER_GENOTYPE)
    return Checkpoint.from_network(network, PAPER_GENOTYPE, NetworkOptions())


# Tiles are exact up to float32 rounding: oneDNN's 3-channel convolutions sum in an order that
# depends on the tensor's width (measured: 0 for most shapes, 1-2 ulp for 3-channel kernels), and
# the IEM's division by t >= 0.001 can enlarge such a difference. Observed: <= 2e-6 on random
# networks, 6e-7 with the authors' lol.pt; an 8-bit output never differs.
TILE_TOLERANCE = 5e-6


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_tiled_enhancement_equals_untiled(fold, seed):
    checkpoint = _paper_checkpoint(seed)
    image = torch.rand(3, 230, 190, generator=torch.Generator().manual_seed(3)) * 0.4
    with Enhancer(checkpoint, fold=fold, max_tile_pixels=0, workers=1) as whole:
        expected = whole(image)
    with Enhancer(checkpoint, fold=fold, max_tile_pixels=9000, workers=2) as tiled:
        assert len(tiled.plan(230, 190)) >= 6
        got = tiled(image)
    assert (got - expected).abs().max().item() <= TILE_TOLERANCE
    assert (torch.round(got * 255) - torch.round(expected * 255)).abs().max().item() <= 1


def test_tiled_authors_checkpoint_within_1e_6(reference_dir):
    from ruas_nni.model.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(reference_dir / "lol.pt")
    image = torch.rand(3, 230, 190, generator=torch.Generator().manual_seed(3)) * 0.4
    with Enhancer(checkpoint, max_tile_pixels=0, workers=1) as whole, \
            Enhancer(checkpoint, max_tile_pixels=9000, workers=2) as tiled:
        assert (tiled(image) - whole(image)).abs().max().item() <= 1e-6


def test_tiling_needs_the_full_halo():
    """``run_tiled`` is exact with a halo of the receptive radius, and not with one pixel less."""
    torch.manual_seed(0)
    stack = torch.nn.Sequential(*[torch.nn.Conv2d(4, 4, 3, padding=1) for _ in range(3)]).eval()  # radius 3
    image = torch.randn(1, 4, 90, 70)
    with torch.inference_mode():
        expected = stack(image)
        exact = run_tiled(stack, image, plan_tiles(90, 70, 3, 900))
        short = run_tiled(stack, image, plan_tiles(90, 70, 2, 900))
    assert (exact - expected).abs().max().item() <= 1e-6
    assert (short - expected).abs().max().item() > 1e-3


def test_receptive_radius_bounds_what_an_output_pixel_sees():
    """A change farther than ``receptive_radius()`` in any direction changes no output pixel."""
    network = export(PAPER_GENOTYPE).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # positive weights: a change travels along every path, nothing cancels
        for name, parameter in network.named_parameters():
            parameter.copy_(torch.rand(parameter.shape, generator=generator) * 0.1 if "weight" in name else 0 * parameter)
    radius = network.receptive_radius()
    image = torch.rand(1, 3, 80, 80, generator=generator) * 0.4
    with torch.inference_mode():
        base = network(image)
        reach = 0
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            for distance in range(1, radius + 2):
                changed = image.clone()
                changed[0, :, 40 + dy * distance, 40 + dx * distance] += 0.5
                if (network(changed) - base)[0, :, 40, 40].abs().max() > 0:
                    reach = max(reach, distance)
    assert 0 < reach <= radius


def test_4k_image_enhances_in_under_1_gb(tmp_path):
    """The whole command on a 3840x2160 PNG, peak resident memory measured in the child process
    (default --memory-budget; a 7680x4320 photo is measured by ``benchmarks/peak_memory.py``).

    The peak is the child's ``VmHWM``, which starts afresh at ``exec``. ``ru_maxrss`` does not: on
    Linux it keeps the high-water mark of the process that forked it, so inside a long test session
    it reported the pytest process's own 1.5 GB instead of the enhancer's ~850 MB."""
    from PIL import Image

    from ruas_nni.model.checkpoint import save_checkpoint

    checkpoint_path = save_checkpoint(_paper_checkpoint(), tmp_path / "model.pt")
    source = tmp_path / "in"
    source.mkdir()
    pixels = (torch.rand(2160, 3840, 3, generator=torch.Generator().manual_seed(5)) * 90).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(source / "frame.png", compress_level=1)
    code = textwrap.dedent(f"""
        import sys
        from ruas_nni.cli import main
        status = main(["enhance", {str(source)!r}, "-o", {str(tmp_path / 'out')!r}, "--checkpoint",
                       {str(checkpoint_path)!r}, "--device", "cpu", "--quiet"])
        peak_kb = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
        print(peak_kb)
        sys.exit(status)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    peak_mb = int(result.stdout.strip().splitlines()[-1]) / 1024
    assert peak_mb < 1000, f"peak RSS {peak_mb:.0f} MB"
    assert Image.open(tmp_path / "out" / "frame.png").size == (3840, 2160)


# -- tiles that follow a memory budget, through the Enhancer itself ------------------------------


def test_tile_size_follows_the_memory_budget():
    from ruas_nni.inference.enhance import TILE_BYTES_PER_PIXEL, tile_pixels_for_budget
    from ruas_nni.inference.tiling import DEFAULT_MAX_TILE_PIXELS

    assert tile_pixels_for_budget(10_000, 2) == DEFAULT_MAX_TILE_PIXELS  # never larger than the heap allows
    assert tile_pixels_for_budget(64, 2) == 64 * 2**20 // (2 * TILE_BYTES_PER_PIXEL)
    assert tile_pixels_for_budget(64, 4) < tile_pixels_for_budget(64, 2)
    assert tile_pixels_for_budget(64, 2, max_channels=12) < tile_pixels_for_budget(64, 2)
    checkpoint = _paper_checkpoint()
    with Enhancer(checkpoint, workers=2, memory_budget=8) as small, Enhancer(checkpoint, workers=2) as default:
        assert small.max_tile_pixels == tile_pixels_for_budget(8, 2)
        assert len(small.plan(2160, 3840)) > len(default.plan(2160, 3840)) > 1
    with pytest.raises(Exception, match="`memory_budget` must be positive"):
        Enhancer(checkpoint, memory_budget=-1)


def _real_photo(reference_dir) -> torch.Tensor:
    from ruas_nni.base.images import read_image

    return read_image(reference_dir / "inputs" / "lol22_crop.png").rgb[:, 40:130, 60:160].contiguous()


def test_budget_tiles_equal_untiled_on_a_real_photo(reference_dir):
    """A tiny budget cuts a real 100x90 photo into dozens of tiles: the authors' lol.pt gives the
    untiled result up to float reordering, and the 8-bit path the same bytes as rounding it."""
    import numpy as np

    from ruas_nni.base.images import to_uint
    from ruas_nni.model.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(reference_dir / "lol.pt")
    image = _real_photo(reference_dir)
    with Enhancer(checkpoint, max_tile_pixels=0, workers=1) as whole:
        expected = whole(image)
    with Enhancer(checkpoint, memory_budget=1, workers=2) as tiled:
        assert len(tiled.plan(90, 100)) >= 50
        got = tiled(image)
        eight_bit = tiled.submit_uint8(to_uint(image)).result()
    assert (got - expected).abs().max().item() <= 1e-6
    assert eight_bit.dtype == np.uint8 and eight_bit.shape == (90, 100, 3)
    assert np.abs(eight_bit.astype(np.int16) - to_uint(expected).astype(np.int16)).max() <= 1
    assert np.array_equal(eight_bit, to_uint(got))


def _shift_checkpoint() -> Checkpoint:
    """The paper genotype with weights that make every 3x3 convolution a shift along its last tap
    and every cell a shift along its longest path (the fuse keeps only the dilated edge's output):
    an output pixel then depends strongly on input pixels at the full receptive radius, which random
    or trained weights do not (their influence there is below float32 resolution)."""
    network = export(PAPER_GENOTYPE).eval()
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.zero_()
                module.bias.zero_()
                out_channels, in_channels, kernel, _ = module.weight.shape
                for channel in range(out_channels):
                    if kernel > 1:
                        module.weight[channel, channel % in_channels, -1, -1] = 1.0 if in_channels <= out_channels else 0.25
                    elif in_channels == 4 * out_channels:  # the fuse: slot d2, after the dilated edge e3
                        module.weight[channel, out_channels + channel, 0, 0] = 1.0
        network.nrm.head.weight.mul_(-0.5)
    return Checkpoint.from_network(network, PAPER_GENOTYPE, NetworkOptions())


@pytest.mark.parametrize("fold", [True, False])
def test_a_short_halo_is_caught_through_the_enhancer(reference_dir, fold):
    """Tiles with the network's halo are exact; one or two pixels short, they are not."""
    checkpoint = _shift_checkpoint()
    image = _real_photo(reference_dir)
    with Enhancer(checkpoint, fold=fold, max_tile_pixels=0, workers=1) as whole:
        expected = whole(image)
    differences = {}
    for short in (0, 1, 2):
        with Enhancer(checkpoint, fold=fold, memory_budget=1, workers=2) as tiled:
            assert tiled.halo == 17
            tiled.halo -= short
            differences[short] = (tiled(image) - expected).abs().max().item()
    assert differences[0] <= 1e-6
    assert differences[1] > 1e-5 and differences[2] > 1e-4, differences
