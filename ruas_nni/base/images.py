"""Reading and writing images, and finding them in folders.

Images become float32 tensors ``3 x H x W`` in ``[0, 1]`` exactly as the authors' code makes them
(8-bit values divided by 255), so that the network's outputs match theirs bit for bit. Outputs are
PNGs written to a temporary name and renamed, so an interrupted run never leaves a partial file.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import atomic_write

if TYPE_CHECKING:
    import torch

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageReadError",
    "LoadedImage",
    "read_image",
    "write_png",
    "find_images",
    "to_uint",
    "natural_key",
]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm"})

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


class ImageReadError(Exception):
    """An input file that is not a readable image; the message says why."""


@dataclass
class LoadedImage:
    """One image as the network sees it, plus what is needed to write the result back alike."""

    rgb: torch.Tensor
    """float32 ``3 x H x W`` in ``[0, 1]``."""
    alpha: torch.Tensor | None
    """float32 ``1 x H x W`` in ``[0, 1]``, or ``None`` when the image has no transparency."""
    bit_depth: int
    """8 or 16: the precision of the source, and of the PNG written for it."""

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        return int(self.rgb.shape[2]), int(self.rgb.shape[1])


def read_image(path: str | os.PathLike[str]) -> LoadedImage:
    """Read an image file (EXIF orientation applied) as RGB in ``[0, 1]``.

    Grayscale becomes three equal channels; palette and CMYK images are converted to RGB; an alpha
    channel (RGBA, LA, palette transparency) is kept apart. 16-bit grayscale keeps 16 bits.
    Raises :class:`ImageReadError` with a one-line reason for anything unreadable.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # Decoders warn about odd tags in damaged files; the file either decodes or fails below.
            # torchvision 0.29 marks its (pinned, working) PNG decoder as deprecated.
            warnings.simplefilter("ignore")
            if _png_bit_depth(path) == 16:
                return _read_png16(path)
            with Image.open(path) as opened:
                image = ImageOps.exif_transpose(opened)
                image.load()
        if image.width < 1 or image.height < 1:
            raise ImageReadError("image has no pixels")
        return _from_pil(image)
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError("no such file") from None
    except PermissionError:
        raise ImageReadError("permission denied") from None
    except IsADirectoryError:
        raise ImageReadError("is a folder, not an image file") from None
    except UnidentifiedImageError:
        reason = "empty file" if path.stat().st_size == 0 else "not an image (unrecognised format)"
        raise ImageReadError(reason) from None
    except Image.DecompressionBombError:
        raise ImageReadError(f"too many pixels (more than {2 * Image.MAX_IMAGE_PIXELS}); refusing to decode") from None
    except MemoryError:
        raise ImageReadError("too large to decode in memory") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt file may break a decoder in any way
        raise ImageReadError(f"cannot decode ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:160]


def _png_bit_depth(path: Path) -> int | None:
    """The bit depth in a PNG's header, or ``None`` when ``path`` is not a readable PNG."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(26)
    except OSError:
        return None
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return head[24]


def _png_chunk_damage(data: bytes) -> str | None:
    """What is wrong with the chunks of the PNG file ``data`` (a chunk cut short, a CRC that does not
    match, no IEND), or ``None`` when every chunk up to IEND is whole."""
    at = len(_PNG_SIGNATURE)
    while at + 12 <= len(data):
        length = int.from_bytes(data[at:at + 4], "big")
        kind, end = data[at + 4:at + 8], at + 8 + length
        if end + 4 > len(data):
            return f"chunk {kind.decode('latin-1')!r} cut short"
        if zlib.crc32(data[at + 4:end]) != int.from_bytes(data[end:end + 4], "big"):
            return f"chunk {kind.decode('latin-1')!r}: CRC mismatch"
        if kind == b"IEND":
            return None
        at = end + 4
    return "no IEND chunk (the file is cut short)"


def _read_png16(path: Path) -> LoadedImage:
    """16-bit PNGs, which Pillow reduces to 8 bits, through torchvision's decoder."""
    # Imported here, not at the top: importing torchvision takes seconds, which every `ruas-nni enhance`
    # would pay, and only 16-bit PNGs need it.
    import torch
    from torchvision.io import ImageReadMode, decode_png

    # torchvision's decoder crashes the process (SIGSEGV) on some damaged PNGs after libpng reports the
    # damage (tests/test_fuzz_data.py found one). So a file reaches it only when every chunk's CRC is
    # right (Pillow does not check IDAT's) and Pillow decodes it whole (to 8 bits, thrown away). The
    # file is read once; all three look at the same bytes.
    raw = bytearray(path.read_bytes())
    damage = _png_chunk_damage(raw)
    if damage is not None:
        raise ImageReadError(f"cannot decode 16-bit PNG ({damage})")
    try:
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
    except Exception as exc:  # noqa: BLE001 - a corrupt file may break a decoder in any way
        raise ImageReadError(f"cannot decode 16-bit PNG ({_one_line(exc)})") from None
    try:
        data = decode_png(torch.frombuffer(raw, dtype=torch.uint8), mode=ImageReadMode.UNCHANGED)
    except (RuntimeError, ValueError) as exc:
        raise ImageReadError(f"cannot decode 16-bit PNG ({_one_line(exc)})") from None
    values = data.to(torch.float32) / 65535.0
    channels = values.shape[0]
    if channels in (1, 2):
        rgb = values[:1].expand(3, -1, -1).contiguous()
    else:
        rgb = values[:3].contiguous()
    alpha = values[-1:].contiguous() if channels in (2, 4) else None
    return LoadedImage(rgb, alpha, 16)


def _from_pil(image: Image.Image) -> LoadedImage:
    import torch  # here, not at the top: `ruas-nni enhance` with a cached ONNX graph never imports torch

    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.uint32).astype(np.float32)
        gray = torch.from_numpy(np.clip(values, 0, 65535) / np.float32(65535.0))
        return LoadedImage(gray.unsqueeze(0).expand(3, -1, -1).contiguous(), None, 16)
    if image.mode == "F":
        values = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
        gray = torch.from_numpy(values)
        return LoadedImage(gray.unsqueeze(0).expand(3, -1, -1).contiguous(), None, 16)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    # uint8 -> float32 division by 255 in torch: the same IEEE results as the authors' ToTensor,
    # without a float64 or strided intermediate.
    channels = torch.from_numpy(np.array(image.convert("RGBA" if has_alpha else "RGB"))).permute(2, 0, 1)
    values = channels.to(torch.float32).div_(255.0)
    tensor = values[:3].contiguous()
    alpha = values[3:].contiguous() if has_alpha else None
    return LoadedImage(tensor, alpha, 8)


def to_uint(values: torch.Tensor, bit_depth: int = 8) -> np.ndarray:
    """``C x H x W`` floats -> ``H x W x C`` unsigned integers: clip to ``[0, 1]``, scale, round."""
    import torch

    top = 255.0 if bit_depth == 8 else 65535.0
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    scaled = torch.round(values.detach().float().clamp(0.0, 1.0) * top)
    return scaled.permute(1, 2, 0).to("cpu").numpy().astype(dtype)


def _encode_png16(array: np.ndarray) -> bytes:
    """A 16-bit RGB or RGBA PNG (Pillow cannot write those); ``array`` is ``H x W x C`` uint16."""
    height, width, channels = array.shape
    color_type = {3: 2, 4: 6}[channels]
    rows = np.ascontiguousarray(array, dtype=">u2").reshape(height, width * channels).view(np.uint8)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return _PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def write_png(path: str | os.PathLike[str], rgb: torch.Tensor, alpha: torch.Tensor | None = None,
              bit_depth: int = 8, *, png_options: Mapping[str, Any] | None = None) -> Path:
    """Write ``rgb`` (``3 x H x W``, clipped to ``[0, 1]``) and optional ``alpha`` as an 8- or
    16-bit PNG, atomically: the file appears under its final name only once complete.

    ``png_options`` go to Pillow's PNG encoder for 8-bit files (e.g. ``compress_level``)."""
    if bit_depth not in (8, 16):
        raise ValueError(f"bit depth must be 8 or 16, got {bit_depth}")
    import torch

    path = Path(path)
    channels = torch.cat([rgb, alpha], dim=0) if alpha is not None else rgb
    array = to_uint(channels, bit_depth)
    with atomic_write(path) as handle:
        if bit_depth == 16:
            handle.write(_encode_png16(array))
        else:
            Image.fromarray(array).save(handle, format="PNG", **(png_options or {}))
    return path


def find_images(inputs: Iterable[str | os.PathLike[str]], recursive: bool = False) -> list[Path]:
    """Expand files and folders into a sorted list of image files (by suffix), keeping file
    arguments as given. Hidden files are skipped; raises ``FileNotFoundError`` for a missing path."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            pattern = path.rglob("*") if recursive else path.iterdir()
            found.extend(sorted(p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                                and not p.name.startswith(".")))
        elif path.exists():
            found.append(path)
        else:
            raise FileNotFoundError(str(path))
    return found


def natural_key(name: str) -> tuple:
    """Sort key for image file names: numeric stems in numeric order (``2.png`` before ``10.png``),
    then the others by name."""
    stem = Path(name).stem
    return (0, int(stem), name) if stem.isdigit() else (1, 0, name)
