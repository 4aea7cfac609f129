"""Reading and writing images, depth/disparity maps and bokeh stacks, with validation and atomic writes.

Conventions: images are float32 RGB arrays in [0, 1] of shape (H, W, 3); depth maps are float32 (H, W)
in metres, disparity maps float32 (H, W) in 1/m. Every writer writes to a temporary path (beside the target,
or inside an existing output folder, see :func:`atomic_dir`) and renames it into place, so a failure never
leaves a half-written file or folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import functools
import glob
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import InputError, OutputError

__all__ = [
    "IMAGE_SUFFIXES",
    "atomic_dir",
    "atomic_file",
    "list_images",
    "parse_floats",
    "read_depth",
    "read_image",
    "read_pfm",
    "read_stack",
    "Stack",
    "stack_metadata_path",
    "stack_outputs",
    "validate_depth",
    "validate_image",
    "write_depth",
    "write_depth_outputs",
    "write_image",
    "write_json",
    "write_pfm",
    "write_stack",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")
DEPTH_SUFFIXES = (".npy", ".png", ".pfm", ".tif", ".tiff")


# ----------------------------------------------------------------------------------------------------------
# atomic writes
# ----------------------------------------------------------------------------------------------------------
def _output_error(path: Path, exc: OSError) -> OutputError:
    if exc.errno == errno.ENOSPC:
        return OutputError(f"{path}: disk full while writing; free some space or choose another output folder")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"{path}: output location is not writable; choose a folder you can write to")
    return OutputError(f"{path}: could not write ({exc.strerror or exc}); check the output path")


def _ensure_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _output_error(path.parent, exc) from exc
    if not os.access(path.parent, os.W_OK):
        raise OutputError(f"{path.parent}: output folder is not writable; choose a folder you can write to")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The file gets the usual permissions (``0o666`` less the umask), or the read/write/execute bits of the file
    it replaces (never its set-user/group-ID bits), whatever the writer created it with (safetensors, for one,
    makes its files owner-only); where the file system refuses the change (FAT, some network mounts) the file
    keeps the permissions it was written with. A symlink ``path`` is followed, as in :func:`atomic_dir`: the
    link stays and its target is replaced. Errors (``OutputError``) name ``path`` as given."""
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    _ensure_parent(target)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}{target.suffix}"
    try:
        yield tmp
        if tmp.is_file() and not tmp.is_symlink():
            mode = target.stat().st_mode & 0o777 if target.is_file() else 0o666 & ~_current_umask()
            with contextlib.suppress(OSError):  # permissions are a courtesy; the write itself succeeded
                os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _output_error(path, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, owned: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a temporary folder; put its content at ``path`` only if the block succeeds.

    ``owned`` lists the names (or glob patterns) of the files the calling verb owns in ``path``: exactly what
    it writes, plus what an earlier run of it wrote there (e.g. the frames listed in the folder's existing
    ``stack.json``, :func:`stack_outputs`). Never a pattern that can match someone else's file. The names
    written this time are always owned.

    - A new ``path`` is created by one rename of the temporary folder (made beside it).
    - An existing ``path`` that holds nothing but owned entries (a rerun into the same folder) is swapped
      whole for the new folder, so no file of the earlier run survives beside the new outputs. The new folder
      takes the old one's mode bits (setgid included) and, where permitted, its group. On Linux the swap is
      one ``renameat2(RENAME_EXCHANGE)``; elsewhere (or where the file system lacks it) old → ``.NAME.old-*``,
      new → ``path``, then the old folder is removed.
    - An existing ``path`` that also holds other files keeps them: the new entries replace those of the same
      name and owned entries that the new run did not write are removed.
    - A symlink ``path`` is followed: the link stays and its target's content is replaced.
    - If ``path`` holds the working folder (``-o .``), is a mount point or its parent folder is not
      writable, the temporary folder is made *inside* ``path`` (``.bokehdepth.tmp-*``), its entries are
      merged in as above (never a whole-folder swap) and it is removed.
    - An existing ``path`` that is not writable is never swapped away: the write fails (``OutputError``).

    Errors (``OutputError``) name ``path`` as given. On failure the temporary folder is removed and ``path``
    is left as it was.
    """
    path = Path(path)
    target = Path(os.path.realpath(path))  # a symlink stays; its target's content is replaced
    if target.exists() and not target.is_dir():
        raise OutputError(f"{path}: exists and is not a folder; choose another output path")
    if not target.exists():
        _ensure_parent(target if path.is_symlink() else path)  # a dangling link: make its target
        inside = False
    else:
        inside = (
            target.parent == target
            or os.path.ismount(target)  # e.g. a container volume: cannot be renamed
            or _holds_cwd(target)
            or not os.access(target.parent, os.W_OK | os.X_OK)
        )
    tmp = _make_temp_dir(path, target, inside)
    inside = tmp.parent == target
    try:
        yield tmp
        if not inside and not target.exists():
            os.replace(tmp, target)
        else:  # a read-only folder is not swapped away: merging into it fails with "not writable"
            _merge_dir(tmp, target, owned, swap=not inside and os.access(target, os.W_OK | os.X_OK))
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _output_error(path, exc) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_INSIDE_TMP_PREFIX = ".bokehdepth.tmp-"


def _make_temp_dir(path: Path, target: Path, inside: bool) -> Path:
    """The temporary folder for :func:`atomic_dir`: beside ``target`` (``.NAME.tmp-*``), or inside it when
    ``inside`` or when the parent refuses it and ``target`` exists. Errors name ``path``."""
    try:
        if not inside:
            try:
                tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS) or not target.is_dir():
                    raise
                inside = True
        if inside:
            tmp = Path(tempfile.mkdtemp(prefix=_INSIDE_TMP_PREFIX, dir=target))
        tmp.chmod(0o777 & ~_current_umask())  # mkdtemp makes 0700; give the folder the usual permissions
    except OSError as exc:
        raise _output_error(path, exc) from exc
    return tmp


def _holds_cwd(folder: Path) -> bool:
    """True if the working folder is ``folder`` or inside it (it must not be renamed away)."""
    try:
        cwd = Path(os.path.realpath(os.getcwd()))
    except OSError:  # the working folder was removed
        return False
    return cwd == folder or folder in cwd.parents


def _merge_dir(new: Path, path: Path, owned: Sequence[str], *, swap: bool = True) -> None:
    """Move the finished folder ``new`` to the existing folder ``path`` (see :func:`atomic_dir`).

    ``new`` may lie inside ``path`` (it is then not one of ``path``'s entries); ``swap=False`` forbids the
    whole-folder swap."""
    written = {e.name for e in new.iterdir()}

    def ours(name: str) -> bool:
        return name in written or any(fnmatch.fnmatchcase(name, pat) for pat in owned)

    skip = new.name if new.parent == path else None  # the temporary folder itself, made inside ``path``
    existing = [e for e in path.iterdir() if e.name != skip]
    if swap and skip is None and all(ours(e.name) for e in existing):
        _swap_dirs(new, path)
        return
    for entry in existing:
        if entry.name not in written and ours(entry.name):
            _remove(entry)
    for entry in new.iterdir():
        dest = path / entry.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(entry, dest)
    new.rmdir()


def _swap_dirs(new: Path, path: Path) -> None:
    """Put folder ``new`` at ``path`` (an existing folder, same parent file system) and remove the old one."""
    _copy_dir_attrs(path, new)
    if _exchange(new, path):  # ``new`` now names the old content
        shutil.rmtree(new, ignore_errors=True)
        return
    old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(path, old)
    try:
        os.replace(new, path)
    except OSError:
        os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _copy_dir_attrs(src: Path, dst: Path) -> None:
    """Give folder ``dst`` the group (best effort) and mode bits (setgid/sticky included) of ``src``."""
    st = src.stat()
    with contextlib.suppress(PermissionError):
        if dst.stat().st_gid != st.st_gid:
            os.chown(dst, -1, st.st_gid)
    os.chmod(dst, st.st_mode & 0o7777)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@functools.lru_cache(maxsize=1)
def _renameat2() -> Any:
    """libc's ``renameat2`` (Linux, glibc ≥ 2.28), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange the two existing paths ``a`` and ``b``; False when the system cannot (then
    nothing changed)."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink()


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ----------------------------------------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------------------------------------
def _check_readable(path: Path, what: str) -> None:
    if not path.exists():
        raise InputError(f"{path}: {what} not found; check the path")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a {what} file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: {what} is not readable; check its permissions")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as float32 RGB in [0, 1], shape (H, W, 3).

    PNG, JPEG, TIFF, WebP and BMP; 8- or 16-bit; the EXIF orientation is applied; alpha is dropped; grey is
    replicated to RGB. Values are the stored (display, sRGB-encoded) values divided by the format maximum.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    _check_readable(path, "image")
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float32)
                arr = arr / (65535.0 if arr.max(initial=0) > 255 or mode.startswith("I;16") else 255.0)
                arr = np.repeat(arr[..., None], 3, axis=2)
            elif mode == "F":
                arr = np.repeat(np.asarray(im, dtype=np.float32)[..., None], 3, axis=2)
            else:
                arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except UnidentifiedImageError as exc:
        raise InputError(f"{path}: not a supported image (PNG, JPEG, TIFF, WebP, BMP); convert it first") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: image is corrupt or truncated ({exc}); re-export or re-download it") from exc
    if path.suffix.lower() in (".png", ".tif", ".tiff") and mode in ("RGB", "RGBA") and _is_16bit_rgb(path):
        arr = _read_16bit_rgb(path, arr.shape)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"{path}: unexpected image shape {arr.shape}; expected an RGB or grey image")
    return np.ascontiguousarray(np.clip(arr, 0.0, 1.0), dtype=np.float32)


def _is_16bit_rgb(path: Path) -> bool:
    if path.suffix.lower() in (".tif", ".tiff"):
        from PIL import Image

        with Image.open(path) as im:
            bits = im.tag_v2.get(258) if hasattr(im, "tag_v2") else None  # BitsPerSample
        return bool(bits) and (bits == 16 or (isinstance(bits, tuple) and bits[0] == 16))
    with open(path, "rb") as f:
        head = f.read(33)
    # PNG IHDR: bit depth at byte 24, colour type at byte 25 (2 = RGB, 6 = RGBA)
    return len(head) >= 26 and head[24] == 16 and head[25] in (2, 6)


def _read_16bit_rgb(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    import cv2

    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.dtype != np.uint16:
        raise InputError(f"{path}: could not decode 16-bit PNG; re-export it")
    rgb = raw[..., 2::-1] if raw.shape[2] >= 3 else raw
    return rgb.astype(np.float32) / 65535.0


def validate_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Check an (H, W, 3) float image in [0, 1]; return it as contiguous float32."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"{name}: expected an RGB image of shape (H, W, 3), got {image.shape}")
    image = image.astype(np.float32, copy=False)
    if not np.isfinite(image).all():
        raise InputError(f"{name}: image holds NaN or inf values; clean the input")
    return np.ascontiguousarray(image)


def write_image(path: str | os.PathLike, image: np.ndarray, bits: Literal[8, 16] = 8, quality: int = 95) -> None:
    """Write a float RGB image in [0, 1] (H, W, 3) or grey (H, W); 16-bit only for PNG/TIFF. Atomic."""
    import cv2
    from PIL import Image

    path = Path(path)
    arr = np.clip(np.nan_to_num(np.asarray(image, dtype=np.float32)), 0.0, 1.0)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(f"{path}: unsupported image suffix '{suffix}'; use .png, .jpg, .tif or .webp")
    with atomic_file(path) as tmp:
        if bits == 16:
            if suffix not in (".png", ".tif", ".tiff"):
                raise InputError(f"{path}: 16-bit output needs .png or .tif")
            u16 = np.round(arr * 65535.0).astype(np.uint16)
            if u16.ndim == 3:
                u16 = u16[..., ::-1]
            if not cv2.imwrite(str(tmp), u16):
                raise OutputError(f"{path}: could not write 16-bit image; check the folder")
        else:
            u8 = np.round(arr * 255.0).astype(np.uint8)
            im = Image.fromarray(u8)
            fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}.get(
                suffix, suffix.lstrip(".").upper()
            )
            im.save(tmp, format=fmt, **({"quality": quality} if fmt in ("JPEG", "WEBP") else {}))


# ----------------------------------------------------------------------------------------------------------
# depth / disparity
# ----------------------------------------------------------------------------------------------------------
def read_pfm(path: str | os.PathLike) -> np.ndarray:
    """Read a PFM file (grey 'Pf' or colour 'PF'; the first channel of colour) as float32, top row first."""
    path = Path(path)
    _check_readable(path, "PFM file")
    try:
        with open(path, "rb") as f:
            header = f.readline().decode("ascii").strip()
            if header not in ("PF", "Pf"):
                raise ValueError("bad header")
            dims = f.readline().decode("ascii").split()
            w, h = int(dims[0]), int(dims[1])
            scale = float(f.readline().decode("ascii").strip())
            ch = 3 if header == "PF" else 1
            data = np.frombuffer(f.read(), dtype="<f4" if scale < 0 else ">f4")
        data = data[: w * h * ch].reshape(h, w, ch)
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a valid PFM file ({exc}); re-export it") from exc
    return np.ascontiguousarray(np.flipud(data[..., 0]), dtype=np.float32)


def write_pfm(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a float (H, W) array as little-endian grey PFM. Atomic."""
    arr = np.asarray(array, dtype="<f4")
    if arr.ndim != 2:
        raise InputError(f"{path}: PFM writer expects a 2-D array, got {arr.shape}")
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(f"Pf\n{arr.shape[1]} {arr.shape[0]}\n-1.0\n".encode("ascii"))
        f.write(np.flipud(arr).tobytes())


def read_depth(path: str | os.PathLike, scale: float | None = None) -> np.ndarray:
    """Read a depth or disparity map as float32 (H, W).

    ``.npy`` (any float/int array, squeezed to 2-D), ``.pfm``, float ``.tif``, or a 16-bit ``.png`` whose
    integer values are divided by ``scale`` (required for PNG: e.g. 1000 for millimetres, 256 for KITTI).
    Zero-valued 16-bit PNG pixels are invalid and become NaN. Units are whatever the file holds (metres for
    depth, 1/m for disparity); no validation here, see :func:`validate_depth`.
    """
    path = Path(path)
    _check_readable(path, "depth map")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix == ".pfm":
            arr = read_pfm(path)
        elif suffix in (".png", ".tif", ".tiff"):
            import cv2

            arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
            if arr is None:
                raise ValueError("could not decode")
            if arr.ndim == 3:
                arr = arr[..., 0]
            if np.issubdtype(arr.dtype, np.integer):
                if scale is None:
                    raise InputError(
                        f"{path}: integer depth PNG/TIFF needs an explicit scale "
                        "(--depth-scale, e.g. 1000 for millimetres, 256 for KITTI)"
                    )
                arr = arr.astype(np.float32)
                arr[arr == 0] = np.nan
                arr = arr / float(scale)
        else:
            raise InputError(f"{path}: unsupported depth format '{suffix}'; use .npy, .pfm or a 16-bit .png")
    except InputError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: depth map is corrupt or unreadable ({exc}); re-export it") from exc
    arr = np.asarray(arr)
    if arr.ndim == 3 and 1 in arr.shape:
        arr = arr.squeeze()
    if arr.ndim != 2:
        raise InputError(f"{path}: depth map must be 2-D (H, W), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"{path}: depth map holds {arr.dtype} values; expected numbers")
    return np.ascontiguousarray(arr, dtype=np.float32)


def write_depth(path: str | os.PathLike, depth: np.ndarray, scale: float = 1000.0) -> None:
    """Write a depth map: ``.npy`` float32 as is, ``.pfm`` float32, ``.png`` 16-bit as round(depth·scale)
    (NaN/invalid → 0). Atomic."""
    import cv2

    path = Path(path)
    depth = np.asarray(depth, dtype=np.float32)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        with atomic_file(path) as tmp, open(tmp, "wb") as f:
            np.save(f, depth)
    elif suffix == ".pfm":
        write_pfm(path, depth)
    elif suffix == ".png":
        vals = np.where(np.isfinite(depth), depth * scale, 0.0)
        if vals.max(initial=0) > 65535:
            raise InputError(f"{path}: depth·scale exceeds 65535; lower the scale")
        with atomic_file(path) as tmp:
            if not cv2.imwrite(str(tmp), np.round(vals).astype(np.uint16)):
                raise OutputError(f"{path}: could not write 16-bit PNG")
    else:
        raise InputError(f"{path}: unsupported depth suffix '{suffix}'; use .npy, .pfm or .png")


def validate_depth(
    depth: np.ndarray,
    name: str = "depth",
    *,
    kind: Literal["depth", "disp"] = "depth",
    shape: tuple[int, int] | None = None,
    allow_invalid: bool = False,
) -> np.ndarray:
    """Validate a metric depth (metres, must be > 0) or disparity (1/m, must be ≥ 0) map.

    Args:
        depth: (H, W) array.
        name: file or argument name used in the error message.
        kind: ``"depth"`` requires finite values > 0; ``"disp"`` finite values ≥ 0.
        shape: expected (H, W), e.g. the image's.
        allow_invalid: if True, NaN marks invalid pixels and is kept; inf and out-of-range values still fail.
    """
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise InputError(f"{name}: expected a 2-D (H, W) {kind} map, got shape {depth.shape}")
    if shape is not None and tuple(depth.shape) != tuple(shape[:2]):
        raise InputError(
            f"{name}: {kind} map is {depth.shape[1]}x{depth.shape[0]} but the image is "
            f"{shape[1]}x{shape[0]}; resize one to match"
        )
    finite = np.isfinite(depth)
    if not allow_invalid and not finite.all():
        raise InputError(f"{name}: {kind} map holds NaN or inf values; fill or mask them first")
    if np.isinf(depth).any():
        raise InputError(f"{name}: {kind} map holds inf values; replace them by NaN or valid values")
    vals = depth[finite]
    if kind == "depth" and (vals <= 0).any():
        raise InputError(f"{name}: metric depth must be > 0 metres everywhere; found {vals.min():.4g}")
    if kind == "disp" and (vals < 0).any():
        raise InputError(f"{name}: disparity must be >= 0 (1/m); found {vals.min():.4g}")
    return np.ascontiguousarray(depth)


def write_depth_outputs(out_dir: Path, depth: np.ndarray, extra: dict[str, np.ndarray] | None = None) -> None:
    """Write the depth-output contract into an (already temporary) folder: ``depth.npy`` (float32 metres,
    NaN invalid), ``depth_color.png`` (see :func:`bokehdepth.viz.depth_to_color`) and ``<name>.npy`` for
    each extra array."""
    from .viz import depth_to_color

    out_dir = Path(out_dir)
    depth = np.asarray(depth, dtype=np.float32)
    np.save(out_dir / "depth.npy", depth)
    write_image(out_dir / "depth_color.png", depth_to_color(depth))
    for key, arr in (extra or {}).items():
        np.save(out_dir / f"{key}.npy", np.asarray(arr, dtype=np.float32))


# ----------------------------------------------------------------------------------------------------------
# stacks
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Stack:
    """A bokeh stack: one scene at several blur strengths.

    Attributes:
        frames: list of float32 (H, W, 3) images in [0, 1] (display values, as stored).
        K: blur strength per frame; px·m for ``K_convention == "metric"`` (blur radius r = K·|disp − disp_focus|
           px with disp in 1/m), px at 512-px width per unit of normalised disparity for ``"normalized"``.
        disp_focus: focus disparity in 1/m (metric stacks), None if unknown.
        reference: index of the sharp/reference frame (0 in everything this project writes).
        gamma: rendering gamma used to make the frames (linear-light exponent).
        lens: optional camera settings, one dict per frame or one for all.
        source: ``"render"``, ``"generated"`` or ``"photos"``.
        K_convention: ``"metric"`` or ``"normalized"``.
        focus_side: ``"near"``/``"far"`` if the focus plane is the nearest/farthest surface, else None.
        names: frame file names (set by the reader).
        extra: any other stack.json fields, kept on round trip.
    """

    frames: list[np.ndarray]
    K: list[float]
    disp_focus: float | None = None
    reference: int = 0
    gamma: float = 2.2
    lens: Any = None
    source: str = "render"
    K_convention: str = "metric"
    focus_side: str | None = None
    names: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.K = [float(k) for k in self.K]
        if len(self.frames) != len(self.K):
            raise InputError(f"stack: {len(self.frames)} frames but {len(self.K)} K values; give one K per frame")
        if not self.frames:
            raise InputError("stack: no frames")
        h, w = self.frames[0].shape[:2]
        for i, fr in enumerate(self.frames):
            if fr.shape[:2] != (h, w):
                raise InputError(
                    f"stack: frame {i} is {fr.shape[1]}x{fr.shape[0]}, frame 0 is {w}x{h}; sizes must match"
                )
        if any(not np.isfinite(k) or k < 0 for k in self.K):
            raise InputError(f"stack: K values must be finite and >= 0, got {self.K}")
        if not 0 <= self.reference < len(self.frames):
            raise InputError(f"stack: reference index {self.reference} out of range for {len(self.frames)} frames")
        if self.K_convention not in ("metric", "normalized"):
            raise InputError(f"stack: K_convention must be 'metric' or 'normalized', got {self.K_convention!r}")
        if self.focus_side not in (None, "near", "far"):
            raise InputError(f"stack: focus_side must be 'near' or 'far', got {self.focus_side!r}")
        if not (np.isfinite(self.gamma) and self.gamma > 0):
            raise InputError(f"stack: gamma must be a finite number > 0, got {self.gamma!r}")
        if self.disp_focus is not None and not np.isfinite(self.disp_focus):
            raise InputError(f"stack: disp_focus must be a finite number (1/m) or null, got {self.disp_focus!r}")

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return self.frames[0].shape[:2]

    def __len__(self) -> int:
        return len(self.frames)

    def array(self) -> np.ndarray:
        """All frames as one float32 array (N, H, W, 3)."""
        return np.stack(self.frames).astype(np.float32)

    def metadata(self) -> dict[str, Any]:
        """The stack.json object (without frame pixels)."""
        names = self.names or [f"frame_{i:03d}.png" for i in range(len(self.frames))]
        meta = {
            "frames": names,
            "K": self.K,
            "disp_focus": self.disp_focus,
            "reference": self.reference,
            "gamma": self.gamma,
            "lens": self.lens,
            "source": self.source,
            "K_convention": self.K_convention,
        }
        if self.focus_side is not None:
            meta["focus_side"] = self.focus_side
        meta.update({k: v for k, v in self.extra.items() if k not in meta})
        return meta


def stack_outputs(out_dir: str | os.PathLike) -> tuple[str, ...]:
    """What a stack writer owns in ``out_dir`` (the ``owned`` of :func:`atomic_dir`): ``stack.json`` and the
    frame files listed under ``"frames"`` in the folder's existing ``stack.json``, so that a rewrite removes
    an earlier stack's frames but never a user's file that merely looks like one (``frame_999.png``).

    The existing ``stack.json`` is read tolerantly: when it is missing or unreadable only ``stack.json`` is
    owned. Only plain image file names directly inside the folder count; they are returned glob-escaped.
    """
    owned = ["stack.json"]
    try:
        meta = json.loads((Path(out_dir) / "stack.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return tuple(owned)
    frames = meta.get("frames") if isinstance(meta, dict) else None
    for name in frames if isinstance(frames, list) else []:
        if (
            isinstance(name, str)
            and name == Path(name).name
            and name.lower().endswith(IMAGE_SUFFIXES)
            and glob.escape(name) not in owned
        ):
            owned.append(glob.escape(name))
    return tuple(owned)


_STACK_KNOWN = {
    "frames",
    "K",
    "disp_focus",
    "reference",
    "gamma",
    "lens",
    "source",
    "K_convention",
    "focus_side",
}


def write_stack(stack: Stack, out_dir: str | os.PathLike, bits: Literal[8, 16] = 8) -> Path:
    """Write a stack folder (``frame_000.png`` … + ``stack.json``) atomically; return its path.

    A rewrite into an existing folder removes the frames its ``stack.json`` listed (:func:`stack_outputs`)
    and keeps every other file."""
    out_dir = Path(out_dir)
    names = [f"frame_{i:03d}.png" for i in range(len(stack.frames))]
    with atomic_dir(out_dir, owned=stack_outputs(out_dir)) as tmp:
        for name, frame in zip(names, stack.frames):
            write_image(tmp / name, frame, bits=bits)
        meta = replace(stack, names=names).metadata()
        (tmp / "stack.json").write_text(json.dumps(meta, indent=2, default=_json_default) + "\n")
    return out_dir


def read_stack(path: str | os.PathLike) -> Stack:
    """Read a stack folder.

    Opens this project's format (``stack.json`` + frames) and the reference pipeline's ``defocus_stack/``
    folders (``<i>.png`` + ``stack_index.json``, the sharp ``ref.png`` beside them): these come back with the
    sharp image inserted as frame 0 (K = 0), ``K_convention="normalized"``, ``source="generated"``. A run
    folder holding ``defocus_stack/`` is accepted too.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: stack folder not found; check the path")
    if not path.is_dir():
        raise InputError(f"{path}: expected a stack folder (frames + stack.json), got a file")
    meta_path = stack_metadata_path(path)
    if meta_path is None:
        raise InputError(f"{path}: no stack.json or stack_index.json in this folder; is it a stack folder?")
    if meta_path.name == "stack.json":
        return _read_own_stack(path)
    return _read_reference_stack(meta_path.parent)


def stack_metadata_path(folder: str | os.PathLike) -> Path | None:
    """The file :func:`read_stack` takes a folder's metadata from (None when there is none).

    ``stack.json`` (this project's format), else ``stack_index.json`` (the reference layout), else
    ``defocus_stack/stack_index.json`` (a reference run folder).
    """
    folder = Path(folder)
    for candidate in (
        folder / "stack.json",
        folder / "stack_index.json",
        folder / "defocus_stack" / "stack_index.json",
    ):
        if candidate.exists():
            return candidate
    return None


def _load_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc}); fix or regenerate the stack") from exc
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a JSON object")
    return obj


def _field(meta_path: Path, meta: dict[str, Any], key: str, convert, default: Any, what: str) -> Any:
    """``convert(meta[key])`` (``default`` when absent or null); a bad value is a one-line InputError."""
    value = meta.get(key)
    if value is None:
        return default
    try:
        return convert(value)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"{meta_path}: field '{key}' must be {what}, got {value!r}; fix or regenerate the stack"
        ) from exc


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("not a number")
    return float(value)


def _number_list(values: Any) -> list[float]:
    if not isinstance(values, list):
        raise TypeError("not a list")
    return [_number(v) for v in values]


def _name_list(values: Any) -> list[str]:
    if not isinstance(values, list) or any(not isinstance(v, str) or not v for v in values):
        raise TypeError("not a list of file names")
    return list(values)


def _read_own_stack(path: Path) -> Stack:
    meta_path = path / "stack.json"
    meta = _load_json(meta_path)
    for key in ("frames", "K"):
        if key not in meta:
            raise InputError(f"{meta_path}: missing field '{key}'; see the stack format in DESIGN.md")
    names = _field(meta_path, meta, "frames", _name_list, None, "a list of frame file names")
    Ks = _field(meta_path, meta, "K", _number_list, None, "a list of numbers (one K per frame)")
    if names is None or Ks is None or len(names) != len(Ks):
        raise InputError(f"{meta_path}: 'frames' and 'K' must be lists of equal length")
    fields = dict(
        disp_focus=_field(meta_path, meta, "disp_focus", _number, None, "a number (focus disparity, 1/m) or null"),
        reference=_field(meta_path, meta, "reference", _index, 0, "a frame index (integer)"),
        gamma=_field(meta_path, meta, "gamma", _number, 2.2, "a number"),
        source=_field(meta_path, meta, "source", _text, "render", "a string"),
        K_convention=_field(meta_path, meta, "K_convention", _text, "metric", "'metric' or 'normalized'"),
        focus_side=_field(meta_path, meta, "focus_side", _text, None, "'near', 'far' or null"),
    )
    frames = [read_image(path / n) for n in names]
    try:
        return Stack(
            frames=frames,
            K=Ks,
            lens=meta.get("lens"),
            names=list(names),
            extra={k: v for k, v in meta.items() if k not in _STACK_KNOWN},
            **fields,
        )
    except InputError as exc:
        raise InputError(f"{meta_path}: {exc}") from exc


def _index(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("not an integer")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise TypeError("not an integer")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def _read_reference_stack(path: Path) -> Stack:
    index_path = path / "stack_index.json"
    index = _load_json(index_path)
    raw_ids, kv = index.get("ids", []), index.get("k_values", {})
    ids = [str(i) for i in raw_ids] if isinstance(raw_ids, list) else []
    if not ids or not isinstance(kv, dict) or any(i not in kv for i in ids):
        raise InputError(f"{index_path}: needs a list 'ids' and a 'k_values' entry for each id")
    Ks = []
    for i in ids:  # the reference pipeline writes numbers; numeric strings are accepted too
        value = kv[i]
        try:
            Ks.append(float(value) if isinstance(value, str) else _number(value))
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"{index_path}: k_values[{i!r}] must be a number, got {value!r}; fix or regenerate the stack"
            ) from exc
    ref_candidates = [path.parent / "ref.png"]
    if index.get("ref_image"):
        ref_candidates.append(Path(index["ref_image"]))
        ref_candidates.append(path.parent / Path(index["ref_image"]).name)
    ref = next((p for p in ref_candidates if p.exists()), None)
    if ref is None:
        raise InputError(f"{index_path}: sharp reference ref.png not found beside the stack; put it in {path.parent}")
    frames = [read_image(ref)] + [read_image(path / f"{i}.png") for i in ids]
    try:
        return Stack(
            frames=frames,
            K=[0.0, *Ks],
            disp_focus=None,
            reference=0,
            source="generated",
            K_convention="normalized",
            names=[str(ref)] + [f"{i}.png" for i in ids],
            extra={"stack_index": {k: v for k, v in index.items()}},
        )
    except InputError as exc:
        raise InputError(f"{index_path}: {exc}") from exc


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (sorted by name)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def parse_floats(values: Sequence[str] | str, name: str) -> list[float]:
    """Parse a list of numbers given as strings (or one whitespace/comma separated string)."""
    if isinstance(values, str):
        values = values.replace(",", " ").split()
    try:
        return [float(v) for v in values]
    except ValueError as exc:
        raise InputError(f"{name}: expected numbers, got {list(values)}") from exc
