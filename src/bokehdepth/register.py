"""Align the photos of a hand-held bracket to its reference photo.

A bracket shot without a tripod moves by a few pixels (and a fraction of a degree) between exposures; a focus
bracket also changes magnification slightly (focus breathing). Depth from defocus compares each photo with
the reference pixel by pixel, so even two pixels of misregistration at the model's working size read as blur
(docs/stage2.md §5 measures it). Each photo is aligned to the reference by a global 2-D motion:

1. a translation from phase correlation of the two photos, greyscale, downscaled to at most
   :data:`COARSE_SIZE` px and smoothed: robust to large shifts and to the photos' different blur;
2. refined for the requested motion by OpenCV's ECC maximisation (``cv2.findTransformECC``, Evangelidis &
   Psarakis 2008) at the same size, kept only where it converges and stays within :data:`MAX_REFINEMENT`
   px of the phase-correlation shift. ECC maximises a zero-mean normalised correlation, insensitive to
   exposure differences, but where most of the frame is much more blurred in the photo than in the
   reference (a small subject in focus at a wide aperture) it can be pulled off by the blur difference;
3. the photo is resampled onto the reference's pixel grid (Lanczos, mirrored borders), unless the motion
   moves no pixel by :data:`MIN_DISPLACEMENT_PX` or more: resampling low-passes the image a little, which a
   tripod bracket should not pay for.

Matrices map reference pixel coordinates ``(x, y, 1)`` to photo pixel coordinates (px at the working size).

Which motion: ``translation`` (the default) for a hand-held bracket; ``euclidean`` adds a rotation and
``affine`` a scale and shear (focus breathing), each only as far as the ECC guard lets it
(``bench/register.py`` measures them, docs/stage2.md §5).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["MOTIONS", "Alignment", "estimate_alignment", "apply_alignment", "register_to_reference"]

MOTIONS = ("none", "translation", "euclidean", "affine")
"""Motion models: none, shift, shift + rotation, full affine (shift, rotation, scale, shear: focus breathing)."""

COARSE_SIZE = 256
"""Longest side (px) of the coarse level."""

MIN_DISPLACEMENT_PX = 0.1
"""A photo whose estimated motion moves no pixel by this much (px at the working size) is left as it is."""

MAX_DISPLACEMENT = 0.25
"""An estimated motion moving a pixel by more than this fraction of the image's longest side is not trusted."""

MAX_REFINEMENT = 1.0
"""ECC may move the frame's centre by at most this many coarse-level px from the phase-correlation shift."""

FLAT = 1e-3
"""Below this standard deviation (of the smoothed coarse grey image, 0–1 scale) a photo counts as flat."""

MIN_RESPONSE = 0.5
"""Where ECC does not confirm it, the phase-correlation shift is used only with at least this peak response
(``cv2.phaseCorrelate``'s, 1 for identical images); below it the photo has no reliable match."""

MAX_LINEAR = 0.02
"""ECC's linear part may differ from the identity by at most this much per entry (about 1.1° of rotation, 2 %
of scale): a hand-held bracket or focus breathing does not turn or zoom more between exposures."""


@dataclass
class Alignment:
    """The motion of one photo against the reference.

    Attributes:
        matrix: (2, 3) affine map from reference pixel coordinates to photo pixel coordinates (px).
        motion: the motion model (:data:`MOTIONS`).
        displacement_px: largest displacement of the image's corners and centre under the estimate (px).
        trusted: False where there is no reliable match (``method`` ``"none"``: ECC did not converge near the
            phase-correlation shift, whose peak is weak) or the estimate moves a pixel by more than
            :data:`MAX_DISPLACEMENT` of the frame; the photo is then left unaligned and ``matrix`` is the
            identity.
        applied: whether the photo was resampled (``trusted`` and ``displacement_px`` ≥
            :data:`MIN_DISPLACEMENT_PX`).
        method: ``"ecc"``; ``"phase correlation"`` where ECC did not converge but the correlation peak is strong
            (:data:`MIN_RESPONSE`), so its shift was kept; ``"none"``: no reliable match; ``"identity"`` for
            the reference and ``motion="none"``.
    """

    matrix: np.ndarray
    motion: str
    displacement_px: float
    trusted: bool
    applied: bool
    method: str = "ecc"

    def to_dict(self) -> dict:
        return {
            "motion": self.motion,
            "matrix": [[round(float(v), 6) for v in row] for row in self.matrix],
            "displacement_px": round(float(self.displacement_px), 4),
            "trusted": bool(self.trusted),
            "applied": bool(self.applied),
            "method": self.method,
        }


def _identity() -> np.ndarray:
    return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _displacement(matrix: np.ndarray, h: int, w: int) -> float:
    pts = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1], [(w - 1) / 2, (h - 1) / 2, 1]], float)
    return float(np.hypot(*(pts @ matrix.T - pts[:, :2]).T).max())


def _grey(img: np.ndarray) -> np.ndarray:
    g = img.mean(axis=2) if img.ndim == 3 else img
    return np.ascontiguousarray(g, dtype=np.float32)


def _ecc(template: np.ndarray, image: np.ndarray, start: np.ndarray, motion: str) -> tuple[float, np.ndarray] | None:
    """ECC maximisation from ``start``: (correlation coefficient, matrix), or None where it does not converge
    or leaves the neighbourhood of ``start`` (:func:`_near`)."""
    import cv2

    mode = {"translation": cv2.MOTION_TRANSLATION, "euclidean": cv2.MOTION_EUCLIDEAN, "affine": cv2.MOTION_AFFINE}
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 200, 1e-6)
    try:
        cc, found = cv2.findTransformECC(template, image, start.astype(np.float32), mode[motion], criteria, None, 5)
    except cv2.error:
        return None
    found = found.astype(np.float64)
    if not np.isfinite(found).all() or not _near(found, start, template.shape[::-1]):
        return None
    return float(cc), found


def _near(found: np.ndarray, start: np.ndarray, size: tuple[int, int]) -> bool:
    """Whether an ECC estimate stays near its start (see :data:`MAX_REFINEMENT`, :data:`MAX_LINEAR`);
    ``size`` = (W, H) of the coarse level."""
    centre = np.array([(size[0] - 1) / 2, (size[1] - 1) / 2, 1.0])
    moved = np.abs(found @ centre - start @ centre).max()
    return bool(moved <= MAX_REFINEMENT and np.abs(found[:, :2] - np.eye(2)).max() <= MAX_LINEAR)


def estimate_alignment(reference: np.ndarray, photo: np.ndarray, motion: str = "translation") -> Alignment:
    """The motion that maps ``reference`` pixel coordinates onto ``photo`` (both (H, W[, C]), same size).

    Estimated at the coarse size (longest side :data:`COARSE_SIZE` px; ECC is sub-pixel there, the
    phase-correlation fallback within about half a coarse pixel, so a fraction of a pixel at the model's
    128-px working size whatever the photos' size): phase correlation gives the
    translation, ECC refines it for ``motion`` and is kept only where it stays within
    :data:`MAX_REFINEMENT` coarse pixels of it at the frame's centre and turns or scales by no more than
    :data:`MAX_LINEAR` (a fit pulled off by the blur difference moves far; a photo blurred all over may not
    converge at all).

    Args:
        reference: the reference photo, any linear or display encoding, values in [0, 1].
        photo: the photo to align, same size.
        motion: one of :data:`MOTIONS`.
    """
    import cv2

    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {MOTIONS}, got {motion!r}")
    if reference.shape[:2] != photo.shape[:2]:
        raise ValueError(f"estimate_alignment: sizes differ, {reference.shape[:2]} and {photo.shape[:2]}")
    h, w = reference.shape[:2]
    if motion == "none":
        return Alignment(_identity(), motion, 0.0, True, False, "identity")
    s = min(1.0, COARSE_SIZE / max(h, w))
    size = (max(8, round(w * s)), max(8, round(h * s)))
    ref_c, img_c = (
        cv2.GaussianBlur(cv2.resize(_grey(x), size, interpolation=cv2.INTER_AREA), (0, 0), 1.0)
        for x in (reference, photo)
    )
    if not (np.isfinite(ref_c).all() and np.isfinite(img_c).all()) or min(ref_c.std(), img_c.std()) < FLAT:
        # a flat (or non-finite) image has nothing to align on
        return Alignment(_identity(), motion, 0.0, False, False, "none")
    window = cv2.createHanningWindow(size, cv2.CV_64F)
    (dx, dy), response = cv2.phaseCorrelate(ref_c.astype(np.float64), img_c.astype(np.float64), window)
    shift = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])
    found = _ecc(ref_c, img_c, shift, motion)
    if found is not None:
        coarse, method = found[1], "ecc"
    elif response >= MIN_RESPONSE:
        coarse, method = shift, "phase correlation"
    else:  # ECC did not confirm a weak correlation peak: no reliable match (e.g. a photo blurred all over)
        return Alignment(_identity(), motion, _displacement(shift, size[1], size[0]) / s, False, False, "none")
    sx, sy = size[0] / w, size[1] / h  # back to the working size
    full = coarse.copy()
    full[0, 2], full[1, 2] = coarse[0, 2] / sx, coarse[1, 2] / sy
    full[0, 1] *= sy / sx  # the linear part under unequal axis scales (equal for an aspect-keeping resize)
    full[1, 0] *= sx / sy
    moved = _displacement(full, h, w)
    if moved > MAX_DISPLACEMENT * max(h, w):
        return Alignment(_identity(), motion, moved, False, False, method)
    return Alignment(full, motion, moved, True, moved >= MIN_DISPLACEMENT_PX, method)


def apply_alignment(photo: np.ndarray, alignment: Alignment) -> np.ndarray:
    """``photo`` resampled onto the reference's pixel grid (Lanczos, mirrored borders, clipped to [0, 1]);
    returned unchanged where ``alignment.applied`` is False."""
    import cv2

    if not alignment.applied:
        return photo
    h, w = photo.shape[:2]
    out = cv2.warpAffine(
        np.ascontiguousarray(photo, dtype=np.float32),
        alignment.matrix.astype(np.float32),
        (w, h),
        flags=cv2.INTER_LANCZOS4 | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    return np.clip(out, 0.0, 1.0).astype(np.float32).reshape(photo.shape)  # warpAffine drops a 1-channel axis


def register_to_reference(
    frames: list[np.ndarray],
    reference: int,
    motion: str = "translation",
    names: list[str] | None = None,
    key: list[float] | None = None,
) -> tuple[list[np.ndarray], list[Alignment]]:
    """Align every frame to ``frames[reference]`` (see the module docstring).

    Args:
        frames: (H, W[, C]) photos at one size.
        reference: index of the reference frame.
        motion: one of :data:`MOTIONS`.
        names: what a warning calls each frame (default: its index).
        key: one number per frame saying how alike the frames look (K for an aperture bracket, the focus
            disparity for a focus bracket). Frames are then aligned in order of their key's distance from the
            reference's, each against the already aligned frame with the nearest key: phase correlation
            between the f/8 reference and an f/1.4 photo whose background is a blur can lock onto the wrong
            peak, against the f/2 photo it does not. A frame that could not be aligned is not used as a
            neighbour. None: every frame against the reference directly.

    Returns the aligned frames (the reference and unmoved frames as given) and one :class:`Alignment` per frame
    (the reference's is the identity). A frame whose estimate is not trusted is left as it is, with one warning
    naming it (``names[i]``, else its index).
    """
    n = len(frames)
    if key is not None and len(key) != n:
        raise ValueError(f"key must give one number per frame ({n}), got {len(key)}")
    kv = np.zeros(n) if key is None else np.asarray(key, dtype=float)
    order = sorted((i for i in range(n) if i != reference), key=lambda i: abs(kv[i] - kv[reference]))
    out: list[np.ndarray | None] = [None] * n
    found: list[Alignment | None] = [None] * n
    out[reference] = frames[reference]
    found[reference] = Alignment(_identity(), motion, 0.0, True, False, "identity")
    aligned = [reference]  # frames on the reference's grid that later frames may be compared with
    for i in order:
        against = reference if key is None else min(aligned, key=lambda j: abs(kv[j] - kv[i]))
        al = estimate_alignment(out[against], frames[i], motion)  # "none": the identity
        if al.trusted:
            aligned.append(i)
        else:
            name = names[i] if names else f"frame {i}"
            why = (
                "no reliable match, e.g. blurred all over"
                if al.method == "none"
                else f"the {motion} estimate moves it by {al.displacement_px:.0f} px, over "
                f"{MAX_DISPLACEMENT:.0%} of the frame"
            )
            warnings.warn(
                f"{name}: not aligned to the reference ({why}); it is used as shot. Check that the photos show "
                "the same scene, or pass --register none to skip alignment",
                stacklevel=2,
            )
        found[i] = al
        out[i] = apply_alignment(frames[i], al)
    return out, found
