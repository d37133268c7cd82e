"""Encoded image files (JPEG, PNG, BMP, GIF, WebP) decoded to one uint8 [N,C,H,W] tensor, resized on request;
file_split makes a Split of files that decodes only the rows asked for."""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath

import torch
from torch import Tensor

from functional_ast.data.errors import DataError, one_line
from functional_ast.data.splits import Split

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def is_image_name(name: str) -> bool:
    base = PurePosixPath(name).name
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def check_image_size(image_size) -> None:
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise DataError(f"image size must be a positive number of pixels (--image-size N), got {image_size!r}")


def _is_palette_png(buf: Tensor) -> bool:
    """A PNG of colour type 3, whose UNCHANGED decoding would give palette indices instead of colours."""
    head = bytes(buf[:26].tolist())
    return len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[25] == 3


def _normalise_decoded(img: Tensor, buf: Tensor) -> Tensor:
    """One decoded image → uint8 [1,H,W] (grayscale) or [3,H,W] (colour)."""
    from torchvision.io import ImageReadMode, decode_image

    if img.dim() == 4:  # animated GIF: its first frame
        img = img[0]
    if img.shape[0] == 2:  # grayscale + alpha: drop the alpha
        img = img[:1]
    elif img.shape[0] == 4:  # RGBA PNG or CMYK JPEG: let the decoder convert to RGB
        img = decode_image(buf, mode=ImageReadMode.RGB)
    if img.dtype != torch.uint8:  # 16-bit PNG: 0..65535 → 0..255
        img = ((img.to(torch.int32) + 128) // 257).clamp_(0, 255).to(torch.uint8)
    return img


def _decode_one(buf: Tensor, name: str) -> Tensor:
    """Decode one image to uint8 [1,H,W] (a grayscale file) or [3,H,W] (colour; palettes expanded, alpha
    dropped), falling back to Pillow for formats torchvision lacks (BMP)."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        mode = ImageReadMode.RGB if _is_palette_png(buf) else ImageReadMode.UNCHANGED
        return _normalise_decoded(decode_image(buf, mode=mode), buf)
    except Exception as e:
        error = e
    try:
        import numpy as np
        from PIL import Image

        with Image.open(io.BytesIO(buf.numpy().tobytes())) as im:
            gray = im.mode in ("1", "L", "LA", "La")
            pixels = torch.from_numpy(np.array(im.convert("L" if gray else "RGB"), dtype=np.uint8))
            return (pixels[None] if gray else pixels.permute(2, 0, 1)).contiguous()
    except Exception:
        raise DataError(
            f"cannot decode image {name} ({one_line(error)}); remove or replace this file and try again"
        ) from None


def _decode(files: list[tuple[str, bytes]], image_size: int | None, where: str) -> Tensor:
    """Decode (name, bytes) pairs to one uint8 [N,C,H,W] tensor (all JPEGs in one batched call): C is 1 if
    every image is grayscale, else 3 (grayscale images among colour ones are repeated to 3 channels)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not files:
        raise DataError(f"no images found in {where}; expected image files (.jpg, .png, ...) in class folders")
    bufs = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for _, data in files]
    out: list[Tensor | None] = [None] * len(files)
    jpeg = [i for i, (n, _) in enumerate(files) if n.lower().endswith((".jpg", ".jpeg"))]
    if jpeg:
        try:
            for i, img in zip(jpeg, decode_jpeg([bufs[i] for i in jpeg], mode=ImageReadMode.UNCHANGED)):
                if img.shape[0] in (1, 3):  # CMYK (4 channels) is converted one by one below
                    out[i] = img
        except Exception:  # a bad or mislabelled file: decoding one by one below names it
            pass
    for i, img in enumerate(out):
        if img is None:
            out[i] = _decode_one(bufs[i], files[i][0])
    return _same_size(_same_channels(out), [n for n, _ in files], image_size)


def _same_channels(images: list[Tensor]) -> list[Tensor]:
    """All grayscale: unchanged ([1,H,W] each). Grayscale mixed with colour: all as 3 channels."""
    if any(img.shape[0] != 1 for img in images):
        return [img.expand(3, -1, -1) if img.shape[0] == 1 else img for img in images]
    return images


def _same_size(images: list[Tensor], names: list[str], image_size: int | None) -> Tensor:
    if image_size is not None:
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, img in enumerate(images):
            by_shape.setdefault(tuple(img.shape), []).append(i)
        for idx in by_shape.values():  # one batched resize per distinct input size
            for i, img in zip(idx, resize_images(torch.stack([images[i] for i in idx]), image_size)):
                images[i] = img
        return torch.stack(images)
    first = images[0].shape
    for img, name in zip(images, names):
        if img.shape != first:
            raise DataError(
                f"images have different sizes ({first[2]}x{first[1]} in {names[0]}, "
                f"{img.shape[2]}x{img.shape[1]} in {name}); pass image_size (--image-size N) to resize them all"
            )
    return torch.stack(images)


def resize_images(images: Tensor, image_size: int | None) -> Tensor:
    """Antialiased resize of uint8 [N,C,H,W] to [N,C,size,size] (non-square images are stretched, not cropped);
    a no-op if size is None or already met."""
    if image_size is None or images.shape[-2:] == (image_size, image_size):
        return images
    from torchvision.transforms.v2.functional import resize

    return resize(images, [image_size, image_size], antialias=True)


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path} ({one_line(e)}); check its permissions or remove it") from None


def file_split(files: list[tuple[str, str, bytes | None]], classes: list[str], image_size, where: str) -> Split:
    """(name, class, bytes) triples (bytes None: read from the path named when decoded) as a split whose
    `rows` decode only the files asked for; raises DataError if there are none."""
    if not files:
        raise DataError(f"no images found in {where}; expected image files (.jpg, .png, ...) in class folders")
    index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([index[c] for _, c, _ in files], dtype=torch.int64)

    def rows(a: int, b: int) -> Tensor:
        return _decode([(n, read_file(Path(n)) if data is None else data) for n, _, data in files[a:b]],
                       image_size, where)

    return Split(labels, rows, [n for n, _, _ in files])
