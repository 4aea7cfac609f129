"""Procedural layered scenes with exact metric depth and pinhole intrinsics.

A scene is a back wall (fronto-parallel or slightly slanted) or a sky at the far limit, optionally a ground
plane, and 2–6 textured objects in front of it: fronto-parallel and slanted planar polygons, 3-D boxes,
discs that bulge towards the camera (smooth depth) and blobs with smoothly varying depth. Every surface is
intersected exactly with the camera rays (a z-buffer keeps the nearest), so the depth of every pixel is
exact; textures are mapped in metric surface coordinates (so they shrink with distance and foreshorten on
slanted planes) and shaded with one directional light. Everything is computed in linear light on a 2×
super-sampled grid and box-filtered down; the image is returned sRGB-encoded.

Units: depth in metres (``DEPTH_RANGE`` = 0.5–20 m by default, object depths log-uniform), intrinsics
``fx, fy, cx, cy`` in pixels (pixel centres at integer coordinates), disparity in 1/m. Another range
(``make_scene(..., depth_range=(near, far))``, e.g. 0.5–5 m for a room or a table top) scales the background,
the wall's nearest point and the camera's height above the ground with ``far / 20``; the random draws are the
same, so the default range reproduces the default scenes bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .textures import linear_to_srgb, random_texture

__all__ = ["DEPTH_RANGE", "Scene", "check_depth_range", "make_scene", "scene_rng"]

DEPTH_RANGE = (0.5, 20.0)
"""Nearest and farthest scene depth in metres."""

_SUPERSAMPLE = 2
_TEX_SIZE = 384


@dataclass
class Scene:
    """One synthetic scene.

    Attributes:
        image: float32 (H, W, 3) sRGB-encoded RGB in [0, 1].
        depth: float32 (H, W) metric depth in metres, finite and within the scene's depth range everywhere
            (:data:`DEPTH_RANGE` by default).
        intrinsics: ``{"fx", "fy", "cx", "cy"}`` in pixels at this size.
        disp_focus: suggested focus disparity in 1/m (the subject's median disparity).
        subject_mask: bool (H, W), the visible pixels of the subject (the nearest sizeable object); plays
            the role of the foreground (RMBG) mask of the published focus convention.
        labels: int16 (H, W) surface id per pixel: 0 = background (wall or sky), i ≥ 1 = ``layers[i]``.
        layers: one description dict per surface (kind, texture, depth in metres).
        seed: the seed it was made from.
    """

    image: np.ndarray
    depth: np.ndarray
    intrinsics: dict[str, float]
    disp_focus: float
    subject_mask: np.ndarray
    labels: np.ndarray
    layers: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 0

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return self.depth.shape  # type: ignore[return-value]

    @property
    def disp(self) -> np.ndarray:
        """Inverse depth (1/m), float32 (H, W)."""
        return (1.0 / self.depth).astype(np.float32)


def scene_rng(seed: int) -> np.random.Generator:
    """The random generator a scene of this seed is drawn from (PCG64 seeded from ``seed``)."""
    return np.random.default_rng(np.random.SeedSequence(int(seed)))


# ----------------------------------------------------------------------------------------------------------
# geometry on the super-sampled grid
# ----------------------------------------------------------------------------------------------------------
@dataclass
class _Camera:
    """Rays of a pinhole camera over a pixel window: normalised coordinates xn = (u − cx)/fx,
    yn = (v − cy)/fy (y down), float32 arrays of the window's shape; (y0, x0) is the window's corner."""

    fx: float
    fy: float
    cx: float
    cy: float
    h: int
    w: int
    y0: int = 0
    x0: int = 0

    def __post_init__(self) -> None:
        v, u = np.mgrid[self.y0 : self.y0 + self.h, self.x0 : self.x0 + self.w].astype(np.float32)
        self.xn = (u - np.float32(self.cx)) / np.float32(self.fx)
        self.yn = (v - np.float32(self.cy)) / np.float32(self.fy)

    @property
    def box(self) -> tuple[slice, slice]:
        """This window as slices of the full frame."""
        return slice(self.y0, self.y0 + self.h), slice(self.x0, self.x0 + self.w)

    def window(self, u0: float, u1: float, v0: float, v1: float, frame: tuple[int, int]) -> _Camera | None:
        """The sub-window covering pixel coordinates [u0, u1] × [v0, v1] (clipped to ``frame`` (H, W));
        None if it is empty."""
        x0, x1 = max(int(np.floor(u0)) - 1, 0), min(int(np.ceil(u1)) + 2, frame[1])
        y0, y1 = max(int(np.floor(v0)) - 1, 0), min(int(np.ceil(v1)) + 2, frame[0])
        if x1 <= x0 or y1 <= y0:
            return None
        return _Camera(self.fx, self.fy, self.cx, self.cy, y1 - y0, x1 - x0, y0, x0)

    def project(self, p: np.ndarray) -> np.ndarray:
        """3-D points (..., 3) in metres → pixel coordinates (..., 2) (u, v)."""
        return np.stack([self.fx * p[..., 0] / p[..., 2] + self.cx, self.fy * p[..., 1] / p[..., 2] + self.cy], -1)


def _plane_depth(cam: _Camera, normal: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Depth Z (m) where each ray meets the plane {P : n·(P − point) = 0}; inf where it does not (behind)."""
    num = float(normal @ point)
    den = normal[0] * cam.xn + normal[1] * cam.yn + normal[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = num / den
    return np.where((den != 0) & (z > 0), z, np.inf)


def _tangent_basis(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors spanning the plane with this normal (the first as horizontal as possible)."""
    up = np.array([0.0, 1.0, 0.0]) if abs(normal[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(up, normal)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(normal, e1)
    return e1, e2


def _polygon_mask(cam: _Camera, pts_uv: np.ndarray) -> np.ndarray:
    """Filled polygon (full-frame pixel coordinates (N, 2)) as a bool mask of the window ``cam``."""
    import cv2

    mask = np.zeros((cam.h, cam.w), np.uint8)
    pts = (pts_uv - [cam.x0, cam.y0]) * 16
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _polygon_window(cam: _Camera, pts_uv: np.ndarray) -> _Camera | None:
    """The window of the full-frame camera ``cam`` that holds this polygon."""
    return cam.window(pts_uv[:, 0].min(), pts_uv[:, 0].max(), pts_uv[:, 1].min(), pts_uv[:, 1].max(), (cam.h, cam.w))


def _child(rng: np.random.Generator) -> np.random.Generator:
    """An independent generator for one texture: its number of draws (which may depend on the image size)
    never shifts the scene's own stream, so a scene's layout does not depend on its resolution."""
    return np.random.default_rng(int(rng.integers(0, 2**63 - 1)))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _random_normal(rng: np.random.Generator, max_tilt_deg: float) -> np.ndarray:
    """A unit normal facing the camera (−z), tilted by up to ``max_tilt_deg`` in a random direction."""
    tilt = np.deg2rad(rng.uniform(0, max_tilt_deg))
    az = rng.uniform(0, 2 * np.pi)
    return np.array([np.sin(tilt) * np.cos(az), np.sin(tilt) * np.sin(az), -np.cos(tilt)])


@dataclass
class _Surface:
    """One surface on the super-sampled grid: depth (inf outside), metric texture coordinates, shading."""

    kind: str
    depth: np.ndarray
    s: np.ndarray
    t: np.ndarray
    shade: np.ndarray | float
    z0: float
    box: tuple[slice, slice] = (slice(None), slice(None))


def _planar_surface(cam: _Camera, normal: np.ndarray, point: np.ndarray, mask: np.ndarray, kind: str) -> _Surface:
    z = _plane_depth(cam, normal, point)
    z = np.where(mask, z, np.inf)
    e1, e2 = _tangent_basis(normal)
    fin = np.isfinite(z)
    zz = np.where(fin, z, 0.0)
    px, py = cam.xn * zz, cam.yn * zz
    s = np.where(fin, px * e1[0] + py * e1[1] + zz * e1[2], 0.0)
    t = np.where(fin, px * e2[0] + py * e2[1] + zz * e2[2], 0.0)
    return _Surface(kind, z, s, t, 1.0, float(point[2]), cam.box)


def _shade(normal: np.ndarray, light: np.ndarray, ambient: float) -> np.ndarray | float:
    """Lambertian shading factor in [ambient, 1] for unit normal(s) (..., 3) facing the camera."""
    cos = np.clip(-(normal @ light), 0.0, 1.0)
    return ambient + (1.0 - ambient) * cos


def _random_polygon(rng: np.random.Generator, cu: float, cv: float, radius: float) -> np.ndarray:
    """A random convex-ish polygon (rectangle, triangle or 5–7-gon) around (cu, cv), pixel coordinates."""
    kind = rng.integers(3)
    if kind == 0:  # axis-aligned-ish rectangle
        a = rng.uniform(-0.3, 0.3)
        hw, hh = radius * rng.uniform(0.5, 1.0), radius * rng.uniform(0.5, 1.0)
        corners = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        return corners @ rot.T + [cu, cv]
    n = 3 if kind == 1 else int(rng.integers(5, 8))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = radius * rng.uniform(0.6, 1.0, n)
    return np.stack([cu + rad * np.cos(ang), cv + rad * np.sin(ang)], -1)


def _plane_object(rng: np.random.Generator, cam: _Camera, z0: float, slanted: bool) -> _Surface | None:
    cu, cv = rng.uniform(0, cam.w), rng.uniform(0, cam.h)
    radius = rng.uniform(0.1, 0.4) * cam.w
    poly = _random_polygon(rng, cu, cv, radius)
    normal = _random_normal(rng, 65.0) if slanted else np.array([0.0, 0.0, -1.0])
    point = z0 * np.array([(cu - cam.cx) / cam.fx, (cv - cam.cy) / cam.fy, 1.0])
    win = _polygon_window(cam, poly)
    if win is None:
        return None
    return _planar_surface(win, normal, point, _polygon_mask(win, poly), "slanted_plane" if slanted else "plane")


def _disc_object(rng: np.random.Generator, full: _Camera, z0: float, light: np.ndarray) -> _Surface | None:
    """A disc facing the camera that bulges towards it (a spherical cap): smooth depth, shaded."""
    cu, cv = rng.uniform(0.1, 0.9) * full.w, rng.uniform(0.1, 0.9) * full.h
    r_px = rng.uniform(0.06, 0.3) * full.w
    aspect = rng.uniform(0.7, 1.4)
    r_m = r_px * z0 / full.fx
    bulge = rng.uniform(0.0, 1.0) * r_m
    cam = full.window(cu - r_px, cu + r_px, cv - r_px * aspect, cv + r_px * aspect, (full.h, full.w))
    if cam is None:
        return None
    du = (cam.xn * cam.fx + cam.cx - cu) / r_px
    dv = (cam.yn * cam.fy + cam.cy - cv) / (r_px * aspect)
    rho2 = du * du + dv * dv
    inside = rho2 < 1.0
    cap = np.sqrt(np.clip(1.0 - rho2, 0.0, 1.0))
    z = np.where(inside, z0 - bulge * cap, np.inf)
    # surface normal of the cap (pointing at the camera)
    nz = -np.maximum(cap, 1e-3) * (r_m / max(bulge, 1e-6)) if bulge > 0 else -np.ones_like(cap)
    nrm = np.stack([du, dv, nz], -1)
    nrm /= np.linalg.norm(nrm, axis=-1, keepdims=True)
    shade = np.where(inside, _shade(nrm, light, 0.35), 1.0)
    zz = np.where(inside, z, 0.0)
    return _Surface("disc", z, cam.xn * zz, cam.yn * zz, shade, z0, cam.box)


def _blob_object(rng: np.random.Generator, full: _Camera, z0: float) -> _Surface | None:
    """A smooth random blob with gently varying depth (± 10 % of its distance)."""
    import cv2

    small = rng.standard_normal((16, 16)).astype(np.float32)
    cu, cv = rng.uniform(0.15, 0.85) * full.w, rng.uniform(0.15, 0.85) * full.h
    r_px = rng.uniform(0.12, 0.35) * full.w
    small2 = rng.standard_normal((6, 6)).astype(np.float32)
    # the blob lies where 1 − ρ² + 0.35·field > 0.2; |field| ≤ max|small| bounds ρ
    reach = r_px * float(np.sqrt(0.8 + 0.35 * np.abs(small).max() * 1.3))
    cam = full.window(cu - reach, cu + reach, cv - reach, cv + reach, (full.h, full.w))
    if cam is None:
        return None
    field_ = cv2.resize(small, (full.w, full.h), interpolation=cv2.INTER_CUBIC)[cam.box]
    du = (cam.xn * cam.fx + cam.cx - cu) / r_px
    dv = (cam.yn * cam.fy + cam.cy - cv) / r_px
    envelope = 1.0 - (du * du + dv * dv)
    inside = (envelope + 0.35 * field_) > 0.2
    var = cv2.resize(small2, (full.w, full.h), interpolation=cv2.INTER_CUBIC)[cam.box]
    z = np.where(inside, z0 * (1.0 + 0.1 * np.tanh(var)), np.inf)
    zz = np.where(inside, z, 0.0)
    return _Surface("blob", z, cam.xn * zz, cam.yn * zz, float(rng.uniform(0.6, 1.0)), z0, cam.box)


def _box_faces(rng: np.random.Generator, cam: _Camera, z0: float, light: np.ndarray) -> list[_Surface]:
    """The camera-facing faces of a rotated 3-D box centred at depth ``z0``."""
    cu, cv = rng.uniform(0.1, 0.9) * cam.w, rng.uniform(0.15, 0.85) * cam.h
    centre = z0 * np.array([(cu - cam.cx) / cam.fx, (cv - cam.cy) / cam.fy, 1.0])
    size_m = rng.uniform(0.1, 0.35) * cam.w * z0 / cam.fx * rng.uniform(0.6, 1.4, 3)
    yaw, pitch = rng.uniform(-np.pi / 3, np.pi / 3), rng.uniform(-0.5, 0.5)
    cy_, sy_, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    rot = np.array([[cy_, 0, sy_], [0, 1, 0], [-sy_, 0, cy_]]) @ np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    faces = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            n = rot[:, axis] * sign
            fc = centre + n * size_m[axis] / 2
            if n @ fc >= 0:  # facing away from the camera
                continue
            a, b = [i for i in range(3) if i != axis]
            ea, eb = rot[:, a] * size_m[a] / 2, rot[:, b] * size_m[b] / 2
            corners = np.array([fc - ea - eb, fc + ea - eb, fc + ea + eb, fc - ea + eb])
            if (corners[:, 2] <= 0.05).any():
                continue
            poly = cam.project(corners)
            win = _polygon_window(cam, poly)
            if win is None:
                continue
            surf = _planar_surface(win, n, fc, _polygon_mask(win, poly), "box")
            surf.shade = _shade(n, light, 0.3)
            surf.z0 = z0
            faces.append(surf)
    return faces


# ----------------------------------------------------------------------------------------------------------
# the scene
# ----------------------------------------------------------------------------------------------------------
def _sample_texture(rng: np.random.Generator, surf: _Surface, fx: float, px_per_texel: float) -> tuple[str, np.ndarray]:
    """Texture this surface: (kind, linear RGB (h, w, 3)) sampled at its metric coordinates."""
    import cv2

    kind, tex = random_texture(_child(rng), _TEX_SIZE, _TEX_SIZE)
    density = fx / (max(surf.z0, 1e-3) * px_per_texel)  # texels per metre
    off = rng.uniform(0, _TEX_SIZE, 2)
    mu = (surf.s * density + off[0]).astype(np.float32)
    mv = (surf.t * density + off[1]).astype(np.float32)
    out = cv2.remap(tex, mu, mv, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return kind, out


def _sky(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A sky: vertical colour gradient with faint clouds (linear RGB)."""
    from .textures import pink_noise_texture, srgb_to_linear

    top = srgb_to_linear(np.array([rng.uniform(0.2, 0.5), rng.uniform(0.4, 0.7), rng.uniform(0.75, 1.0)]))
    bottom = srgb_to_linear(np.array([rng.uniform(0.7, 0.95), rng.uniform(0.75, 0.95), rng.uniform(0.85, 1.0)]))
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    grad = (1 - t) * top + t * bottom
    clouds = pink_noise_texture(_child(rng), h, w).mean(axis=2, keepdims=True)
    return np.clip(grad * (0.85 + 0.3 * clouds * rng.uniform(0.0, 1.0)), 0.0, 1.0).astype(np.float32)


def _downsample(arr: np.ndarray, f: int) -> np.ndarray:
    """Box-filter (mean) an (H·f, W·f, ...) array by ``f``."""
    h, w = arr.shape[0] // f, arr.shape[1] // f
    return arr.reshape(h, f, w, f, *arr.shape[2:]).mean(axis=(1, 3))


def _pick_sample(depth: np.ndarray, labels: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """Per f×f block, the depth and label of the lower-median sample (a real surface, never a blend)."""
    h, w = depth.shape[0] // f, depth.shape[1] // f
    d = depth.reshape(h, f, w, f).transpose(0, 2, 1, 3).reshape(h, w, f * f)
    lab = labels.reshape(h, f, w, f).transpose(0, 2, 1, 3).reshape(h, w, f * f)
    idx = np.argsort(d, axis=-1, kind="stable")[..., (f * f - 1) // 2]
    return (
        np.take_along_axis(d, idx[..., None], -1)[..., 0],
        np.take_along_axis(lab, idx[..., None], -1)[..., 0],
    )


def check_depth_range(depth_range: tuple[float, float]) -> tuple[float, float]:
    """Validate a scene depth range ``(near, far)`` in metres: ``1 mm ≤ near``, ``far ≤ 100 km`` and
    ``far ≥ 4·near`` (the layout puts the background between ``far / 4`` and ``far`` and objects in front of it)."""
    near, far = (float(v) for v in depth_range)
    if not (np.isfinite(near) and np.isfinite(far) and 1e-3 <= near and far <= 1e5 and far >= 4 * near):
        raise ValueError(
            f"depth range must have 0.001 <= near, far <= 100000 and far >= 4 x near (metres), got {near:g}-{far:g}"
        )
    return near, far


def make_scene(seed: int, size: int | tuple[int, int] = 256, depth_range: tuple[float, float] = DEPTH_RANGE) -> Scene:
    """Draw one scene, deterministically from ``seed``.

    Args:
        seed: any non-negative integer; the same seed and size always give the same arrays.
        size: output size in pixels, an int (square) or (H, W).
        depth_range: ``(near, far)`` in metres (default :data:`DEPTH_RANGE`); see the module docstring.

    Returns:
        :class:`Scene` with an sRGB image (H, W, 3), exact depth (H, W) in metres, intrinsics in pixels.
    """
    h, w = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if h < 8 or w < 8:
        raise ValueError(f"scene size must be at least 8x8 px, got {w}x{h}")
    rng = scene_rng(seed)
    zmin, zmax = check_depth_range(depth_range)
    scale = zmax / DEPTH_RANGE[1]  # world scale of the background and the ground (1 by default)
    f = _SUPERSAMPLE
    hfov = np.deg2rad(rng.uniform(40.0, 90.0))
    fx = w / (2.0 * np.tan(hfov / 2.0))
    intr = {
        "fx": float(fx),
        "fy": float(fx),
        "cx": float((w - 1) / 2 + rng.uniform(-0.02, 0.02) * w),
        "cy": float((h - 1) / 2 + rng.uniform(-0.02, 0.02) * h),
    }
    cam = _Camera(
        intr["fx"] * f, intr["fy"] * f, intr["cx"] * f + (f - 1) / 2, intr["cy"] * f + (f - 1) / 2, h * f, w * f
    )
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.2, 0.8), 1.0])
    light /= np.linalg.norm(light)

    surfaces: list[_Surface] = []
    layers: list[dict[str, Any]] = []
    # background: a wall (possibly slanted), or a sky at the far limit
    use_sky = rng.uniform() < 0.3
    if use_sky:
        bg_depth = np.full((cam.h, cam.w), zmax)
        bg_rgb = _sky(rng, cam.h, cam.w)
        layers.append({"kind": "sky", "texture": "sky", "depth_m": zmax})
    else:
        zb = _log_uniform(rng, zmax / 4, zmax)
        normal = _random_normal(rng, 35.0)
        point = np.array([0.0, 0.0, zb])
        wall = _planar_surface(cam, normal, point, np.ones((cam.h, cam.w), bool), "wall")
        wall.depth = np.clip(np.where(np.isfinite(wall.depth), wall.depth, zmax), max(zmax / 10, zmin), zmax)
        tk, bg_rgb = _sample_texture(rng, wall, cam.fx, rng.uniform(0.7, 2.5) * f)
        bg_rgb = bg_rgb * float(_shade(normal, light, 0.5))
        bg_depth = wall.depth
        layers.append({"kind": "wall", "texture": tk, "depth_m": zb})
    zbuf = bg_depth.astype(np.float64).copy()
    rgb = bg_rgb.astype(np.float32).copy()
    labels = np.zeros((cam.h, cam.w), np.int16)
    far = float(min(np.median(bg_depth), zmax))

    # optional ground plane (camera 0.8–2 m above it at the default scale)
    if rng.uniform() < 0.4:
        height = rng.uniform(0.8, 2.0) * scale
        pitch = rng.uniform(-0.15, 0.15)
        normal = np.array([0.0, -np.cos(pitch), np.sin(pitch)])
        ground = _planar_surface(cam, normal, np.array([0.0, height, 0.0]), np.ones((cam.h, cam.w), bool), "ground")
        ground.z0 = max(height * 4, zmin)
        ground.depth = np.where(ground.depth <= zmax, np.maximum(ground.depth, zmin), np.inf)
        surfaces.append(ground)

    n_obj = int(rng.integers(2, 7))
    kinds = rng.choice(["plane", "slanted_plane", "disc", "box", "blob"], size=n_obj, p=[0.25, 0.2, 0.2, 0.15, 0.2])
    for kind in kinds:
        z0 = _log_uniform(rng, zmin * 1.05, max(far * 0.8, zmin * 1.5))
        if kind in ("plane", "slanted_plane"):
            new = [_plane_object(rng, cam, z0, kind == "slanted_plane")]
        elif kind == "disc":
            new = [_disc_object(rng, cam, z0, light)]
        elif kind == "blob":
            new = [_blob_object(rng, cam, z0)]
        else:
            new = list(_box_faces(rng, cam, z0, light))
        surfaces.extend(x for x in new if x is not None)

    for i, surf in enumerate(surfaces):
        d = np.clip(surf.depth, zmin, np.inf)
        tk, tex = _sample_texture(rng, surf, cam.fx, _log_uniform(rng, 0.5, 2.0) * f)
        tex = tex * np.asarray(surf.shade, np.float32)[..., None] if np.ndim(surf.shade) else tex * surf.shade
        zb, box_rgb, box_lab = zbuf[surf.box], rgb[surf.box], labels[surf.box]
        win = np.isfinite(d) & (d < zb)
        zb[win] = d[win]
        box_rgb[win] = tex[win]
        box_lab[win] = i + 1
        layers.append({"kind": surf.kind, "texture": tk, "depth_m": round(surf.z0, 6)})

    rgb = rgb * rng.uniform(0.75, 1.15)
    zbuf = np.clip(zbuf, zmin, zmax)
    image_lin = _downsample(rgb.astype(np.float32), f)
    depth, lab = _pick_sample(zbuf.astype(np.float32), labels, f)
    image = linear_to_srgb(np.clip(image_lin, 0.0, 1.0))

    # subject: the nearest object covering at least 2 % of the frame (else the largest surface)
    ids, counts = np.unique(lab, return_counts=True)
    cand = [
        (float(np.median(depth[lab == i])), int(i))
        for i, c in zip(ids, counts)
        if i > 0 and layers[i]["kind"] != "ground" and c >= 0.02 * h * w
    ]
    if cand:
        subject = min(cand)[1]
    else:
        subject = int(ids[np.argmax(counts)])
    subject_mask = lab == subject
    disp_focus = float(np.median(1.0 / depth[subject_mask]))
    return Scene(
        image=np.ascontiguousarray(image, dtype=np.float32),
        depth=np.ascontiguousarray(depth, dtype=np.float32),
        intrinsics=intr,
        disp_focus=disp_focus,
        subject_mask=subject_mask,
        labels=lab.astype(np.int16),
        layers=layers,
        seed=int(seed),
    )
