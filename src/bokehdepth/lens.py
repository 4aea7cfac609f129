"""Thin-lens model: circle of confusion, the blur scalar K, and the conversions around it.

Units, everywhere: focal length ``focal_mm`` in millimetres, ``f_number`` dimensionless, focus distance
``focus_m`` and depth in metres, disparity ``disp`` = 1/depth in 1/m (dioptres), sensor width in mm, image
width in pixels. **K** is in px·m: the blur *radius* in pixels is ``r = K · |disp − disp_focus|``.

Functions are pure and accept Python floats, numpy arrays or torch tensors (elementwise arithmetic only).
Derivation (shared/reference/renderer.md §1): the CoC diameter on the sensor is
``c = f²·s1 / (N·(s1 − f)) · |1/s − 1/s1|`` (metres), so the radius in pixels is
``r = f²·s1 / (2N(s1 − f)) · 1000 · W_px / sensor_mm · |1/s − 1/s1|``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import InputError

__all__ = [
    "FULL_FRAME_DIAGONAL_MM",
    "LensSettings",
    "blur_radius",
    "coc_diameter_mm",
    "coc_radius_px",
    "depth_from_blur",
    "depth_to_disp",
    "disp_to_depth",
    "f_number_for_K",
    "focus_disp_from_pixel",
    "K_for_blur",
    "k_from_camera",
    "metric_to_normalized_K",
    "normalized_to_metric_K",
    "scale_K_for_resize",
    "sensor_width_from_35mm",
]

FULL_FRAME_DIAGONAL_MM = 43.27
"""Diagonal of a 36 × 24 mm full-frame sensor (mm), as in the reference `calc_dof_cond`."""

NORMALIZED_K_WIDTH = 512
"""Image width (px) at which the published models' normalised K is defined."""


def _check_camera(focal_mm: Any, f_number: Any, focus_m: Any, sensor_mm: Any = 36.0, width_px: Any = 1) -> None:
    def bad(x: Any) -> bool:
        arr = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
        return bool((~np.isfinite(arr)).any() or (arr <= 0).any())

    if bad(focal_mm):
        raise InputError(f"--focal-mm: focal length must be > 0 mm, got {focal_mm}")
    if bad(f_number):
        raise InputError(f"--f-number: f-number must be > 0, got {f_number}")
    if bad(focus_m):
        raise InputError(f"--focus-m: focus distance must be > 0 m, got {focus_m}")
    if bad(sensor_mm):
        raise InputError(f"--sensor-mm: sensor width must be > 0 mm, got {sensor_mm}")
    if bad(width_px):
        raise InputError(f"--width-px: image width must be > 0 px, got {width_px}")
    f = np.asarray(focal_mm.detach().cpu() if hasattr(focal_mm, "detach") else focal_mm, dtype=np.float64) / 1000
    s = np.asarray(focus_m.detach().cpu() if hasattr(focus_m, "detach") else focus_m, dtype=np.float64)
    if (s <= f).any():
        raise InputError(
            f"--focus-m: focus distance {focus_m} m must exceed the focal length {focal_mm} mm "
            "(a thin lens cannot focus closer than its focal length)"
        )


def depth_to_disp(depth: Any) -> Any:
    """Disparity (1/m) from depth (m): ``1/depth``."""
    return 1.0 / depth


def disp_to_depth(disp: Any) -> Any:
    """Depth (m) from disparity (1/m): ``1/disp`` (inf where disp = 0)."""
    if isinstance(disp, np.ndarray):
        with np.errstate(divide="ignore"):
            return 1.0 / disp
    return 1.0 / disp


def coc_diameter_mm(depth_m: Any, focal_mm: float, f_number: float, focus_m: float) -> Any:
    """Circle-of-confusion diameter on the sensor, in mm, of a point at ``depth_m`` metres."""
    _check_camera(focal_mm, f_number, focus_m)
    f = focal_mm / 1000.0
    c_m = f * f * focus_m / (f_number * (focus_m - f)) * abs(1.0 / depth_m - 1.0 / focus_m)
    return c_m * 1000.0


def k_from_camera(focal_mm: float, f_number: float, focus_m: float, sensor_mm: float, width_px: float) -> Any:
    """Blur strength K in px·m from camera settings (thin lens).

    ``K = f²·s1 / (2·N·(s1 − f)) · 1000 · W_px / sensor_mm`` with f, s1 in metres. For 50 mm, f/2, focus 2 m,
    36 mm sensor, 6000 px: K = 12500/117 ≈ 106.84 px·m.

    >>> round(k_from_camera(50, 2, 2, 36, 6000), 4)
    106.8376
    """
    _check_camera(focal_mm, f_number, focus_m, sensor_mm, width_px)
    f = focal_mm / 1000.0
    return f * f * focus_m / (2.0 * f_number * (focus_m - f)) * 1000.0 * width_px / sensor_mm


def coc_radius_px(
    depth_m: Any, focal_mm: float, f_number: float, focus_m: float, sensor_mm: float, width_px: float
) -> Any:
    """Circle-of-confusion radius in pixels at ``width_px`` of a point at ``depth_m`` metres."""
    return coc_diameter_mm(depth_m, focal_mm, f_number, focus_m) / 2.0 * width_px / sensor_mm


def blur_radius(disp: Any, K: Any, disp_focus: Any) -> Any:
    """Blur radius in px: ``K · |disp − disp_focus|`` (disp, disp_focus in 1/m; K in px·m)."""
    d = disp - disp_focus
    return K * (d.abs() if hasattr(d, "abs") else np.abs(d))


def f_number_for_K(K: float, focal_mm: float, focus_m: float, sensor_mm: float, width_px: float) -> float:
    """The f-number that gives blur strength ``K`` (px·m) with this lens, focus and sensor."""
    if not K > 0:
        raise InputError(f"--K: K must be > 0 px·m to solve for an f-number, got {K}")
    _check_camera(focal_mm, 1.0, focus_m, sensor_mm, width_px)
    f = focal_mm / 1000.0
    return f * f * focus_m * 1000.0 * width_px / (2.0 * K * (focus_m - f) * sensor_mm)


def K_for_blur(radius_px: float, depth_m: float, focus_m: float) -> float:
    """The K (px·m) that blurs a point at ``depth_m`` to ``radius_px`` pixels when focused at ``focus_m``."""
    if radius_px < 0:
        raise InputError(f"radius must be >= 0 px, got {radius_px}")
    if depth_m <= 0 or focus_m <= 0:
        raise InputError("depth and focus distance must be > 0 m")
    delta = abs(1.0 / depth_m - 1.0 / focus_m)
    if delta == 0:
        raise InputError("a point at the focus distance is never blurred; choose another depth")
    return radius_px / delta


def depth_from_blur(radius_px: Any, K: float, focus_m: float) -> tuple[Any, Any]:
    """Both depths (m) that blur to ``radius_px`` at strength K: (nearer than focus, farther than focus).

    ``1/s = 1/s1 ± r/K``; the far solution is ``inf`` (or NaN) when ``r/K ≥ 1/s1`` (no such depth).
    """
    if not K > 0:
        raise InputError(f"K must be > 0 px·m, got {K}")
    offset = np.asarray(radius_px, dtype=np.float64) / K
    near = 1.0 / (1.0 / focus_m + offset)
    far_disp = 1.0 / focus_m - offset
    with np.errstate(divide="ignore"):
        far = np.where(far_disp > 0, 1.0 / np.where(far_disp > 0, far_disp, 1.0), np.inf)
    return near, far


def focus_disp_from_pixel(depth: np.ndarray, x: int, y: int, window: int = 5) -> float:
    """Focus disparity (1/m) that puts pixel (x, y) of a depth map (m) in focus: 1 / median depth of a
    ``window``×``window`` neighbourhood (robust to one noisy pixel), ignoring invalid values."""
    depth = np.asarray(depth)
    h, w = depth.shape[:2]
    if not (0 <= x < w and 0 <= y < h):
        raise InputError(f"--focus-xy: pixel ({x}, {y}) is outside the {w}x{h} image")
    r = max(window // 2, 0)
    patch = depth[max(y - r, 0) : y + r + 1, max(x - r, 0) : x + r + 1]
    vals = patch[np.isfinite(patch) & (patch > 0)]
    if vals.size == 0:
        raise InputError(f"--focus-xy: no valid depth around pixel ({x}, {y}); pick another point")
    return float(1.0 / np.median(vals))


def scale_K_for_resize(K: Any, old_width: float, new_width: float) -> Any:
    """K after resizing an image from ``old_width`` to ``new_width`` px (K scales with width; crops keep K)."""
    return K * (new_width / old_width)


def metric_to_normalized_K(
    K_metric: Any, disp_min: float, disp_max: float, width_px: float, ref_width: float = NORMALIZED_K_WIDTH
) -> Any:
    """Convert metric K (px·m at ``width_px``) to the published models' normalised K.

    The released BokehDepth models use per-image min–max normalised disparity ``dn ∈ [0, 1]`` and
    ``r = K_n·|dn − dn_focus|`` px at 512-px width (shared/reference/bokehdepth.md §2). Since
    ``disp − disp_focus = (disp_max − disp_min)·(dn − dn_focus)``:
    ``K_n = K_metric · (disp_max − disp_min) · ref_width / width_px``.
    """
    span = disp_max - disp_min
    if not span > 0:
        raise InputError(f"disparity span must be > 0 1/m, got {disp_min}..{disp_max}")
    return K_metric * span * (ref_width / width_px)


def normalized_to_metric_K(
    K_norm: Any, disp_min: float, disp_max: float, width_px: float, ref_width: float = NORMALIZED_K_WIDTH
) -> Any:
    """Inverse of :func:`metric_to_normalized_K`: metric K (px·m at ``width_px``) from normalised K."""
    span = disp_max - disp_min
    if not span > 0:
        raise InputError(f"disparity span must be > 0 1/m, got {disp_min}..{disp_max}")
    return K_norm / span * (width_px / ref_width)


def sensor_width_from_35mm(focal_mm: float, focal_35mm: float, width_px: float, height_px: float) -> float:
    """Sensor width (mm) from the real and 35 mm-equivalent focal lengths, assuming square pixels.

    ``diag = 43.27 · f / f35``; ``width = diag / sqrt(1 + (H/W)²)``.
    """
    if focal_mm <= 0 or focal_35mm <= 0:
        raise InputError("focal lengths must be > 0 mm")
    diag = FULL_FRAME_DIAGONAL_MM * focal_mm / focal_35mm
    return diag / math.sqrt(1.0 + (height_px / width_px) ** 2)


@dataclass(frozen=True)
class LensSettings:
    """Camera settings of one photo.

    Attributes:
        focal_mm: real focal length (mm).
        f_number: aperture f-number.
        focus_m: focus distance (m).
        sensor_mm: sensor width (mm).
        width_px: image width (px) at which K is wanted.
    """

    focal_mm: float
    f_number: float
    focus_m: float
    sensor_mm: float
    width_px: float

    def __post_init__(self) -> None:
        _check_camera(self.focal_mm, self.f_number, self.focus_m, self.sensor_mm, self.width_px)

    @property
    def K(self) -> float:
        """Blur strength in px·m."""
        return float(k_from_camera(self.focal_mm, self.f_number, self.focus_m, self.sensor_mm, self.width_px))

    @property
    def disp_focus(self) -> float:
        """Focus disparity in 1/m."""
        return 1.0 / self.focus_m

    def radius_px(self, depth_m: Any) -> Any:
        """Blur radius (px) of a point at ``depth_m`` metres."""
        return blur_radius(1.0 / np.asarray(depth_m, dtype=np.float64), self.K, self.disp_focus)

    def resized(self, width_px: float) -> LensSettings:
        """The same camera at another image width."""
        return LensSettings(self.focal_mm, self.f_number, self.focus_m, self.sensor_mm, width_px)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)
