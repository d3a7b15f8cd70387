"""Image files of a BOP dataset: RGB (PNG or JPEG), depth (uint16 PNG scaled by ``depth_scale``) and
binary masks (``mask/IMID_GTID.png``, ``mask_visib/IMID_GTID.png``), read and written with OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bopkd.errors import BopkdError, MissingFileError


def _read(path: Path, flags: int) -> np.ndarray:
    if not path.is_file():
        raise MissingFileError(path)
    im = cv2.imread(str(path), flags)
    if im is None:
        raise BopkdError(f"{path}: not a readable image; the file is truncated or corrupt, download it again")
    return im


def _write(path: Path, im: np.ndarray, params: list[int] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if not cv2.imwrite(str(tmp), im, params or []):
        raise BopkdError(
            f"{path}: could not write the image; check the folder is writable and the disk has room"
        )
    tmp.replace(path)


def load_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB image."""
    im = _read(Path(path), cv2.IMREAD_COLOR)
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)


def save_rgb(path: str | Path, rgb: np.ndarray, jpeg_quality: int = 95) -> None:
    path = Path(path)
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if path.suffix.lower() in (".jpg", ".jpeg") else None
    _write(path, bgr, params)


def load_depth(path: str | Path, depth_scale: float = 1.0) -> np.ndarray:
    """(H, W) float64 depth in mm: the stored uint16 values times ``depth_scale``; 0 means no data."""
    im = _read(Path(path), cv2.IMREAD_ANYDEPTH)
    return im.astype(np.float64) * float(depth_scale)


def save_depth(path: str | Path, depth_mm: np.ndarray, depth_scale: float = 1.0) -> None:
    """Write depth (mm) as a uint16 PNG storing ``round(depth / depth_scale)``."""
    d = np.round(np.asarray(depth_mm, dtype=np.float64) / float(depth_scale))
    if d.size and d.max() > 65535:
        raise BopkdError(
            f"{path}: depth exceeds the uint16 range at depth_scale {depth_scale}; use a larger scale"
        )
    _write(Path(path), d.astype(np.uint16))


def load_mask(path: str | Path) -> np.ndarray:
    """(H, W) bool mask (any non-zero pixel is inside)."""
    return _read(Path(path), cv2.IMREAD_GRAYSCALE) > 0


def save_mask(path: str | Path, mask: np.ndarray) -> None:
    _write(Path(path), (np.asarray(mask) > 0).astype(np.uint8) * 255)
