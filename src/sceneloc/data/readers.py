"""Reading one file of a dataset: images, depth maps (and their registration to the image's camera),
poses, intrinsics. Every problem raises :class:`SceneLocError` naming the file."""

from __future__ import annotations

import json
import struct
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from sceneloc.errors import SceneLocError
from sceneloc.geometry import intrinsics_matrix, is_rigid, pixel_grid, pixels_between_cameras, project_to_so3
from sceneloc.validation import check_intrinsics, parse_intrinsics_values

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
INVALID_DEPTH_MM = (0, 65535)
#: Leading bytes of the image formats OpenCV decodes (PNG, JPEG, TIFF, BMP, WebP's RIFF).
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
_IMAGE_MAGIC = (PNG_MAGIC, JPEG_MAGIC, b"II*\x00", b"MM\x00*", b"BM", b"RIFF")

def read_matrix(path: Path, shape: tuple[int, int], what: str) -> np.ndarray:
    """A whitespace/tab separated matrix (CRLF and ``7.0e-001`` style numbers accepted)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise SceneLocError(f"{path}: missing {what} file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SceneLocError(f"{path}: cannot read {what} file ({e})") from None
    try:
        values = [float(v) for v in text.split()]
    except ValueError:
        raise SceneLocError(f"{path}: malformed {what} file (non-numeric entry)") from None
    n = shape[0] * shape[1]
    if len(values) != n:
        raise SceneLocError(f"{path}: malformed {what} file (expected {n} numbers, found {len(values)})")
    M = np.array(values, dtype=np.float64).reshape(shape)
    if not np.all(np.isfinite(M)):
        raise SceneLocError(f"{path}: malformed {what} file (nan or inf entry)")
    return M


def dataset_unit(root: Path) -> str:
    """``m``, or ``units`` for a dataset whose ``import_info.json`` states arbitrary (SfM) units."""
    info = Path(root) / "import_info.json"
    try:
        units = json.loads(info.read_text()).get("units") if info.is_file() else None
    except (OSError, ValueError, AttributeError):
        units = None
    return "m" if not isinstance(units, str) or units.startswith("metres") else "units"


def read_pose(path: Path) -> np.ndarray:
    """Camera-to-world 4x4 pose, rotation projected onto SO(3); errors name the file."""
    T = read_matrix(path, (4, 4), "pose")
    if not is_rigid(T, tol=0.05):
        raise SceneLocError(f"{path}: pose is not a rigid transform (rotation not orthonormal or last row not 0 0 0 1)")
    T[:3, :3] = project_to_so3(T[:3, :3])
    return T


@contextmanager
def _quiet_opencv():
    """Silence OpenCV's own log lines (e.g. libpng errors on a broken file) so that the user sees
    only our one-line error."""
    logging = cv2.utils.logging
    old = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(old)


def _decode(path: Path, flags: int, what: str) -> np.ndarray:
    try:
        buf = np.fromfile(str(path), dtype=np.uint8)
    except FileNotFoundError:
        raise SceneLocError(f"{path}: missing {what}") from None
    except OSError as e:
        raise SceneLocError(f"{path}: cannot read {what} ({e.strerror})") from None
    if buf.size == 0:
        raise SceneLocError(f"{path}: unreadable {what} (empty file)")
    with _quiet_opencv():
        img = cv2.imdecode(buf, flags)
    if img is None:
        raise SceneLocError(f"{path}: unreadable {what} (not a valid image file)")
    return img


def _image_head(path: Path, what: str, n: int) -> bytes:
    """The first ``n`` bytes of ``path``, refused when it is missing, empty or not an image file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(n)
    except FileNotFoundError:
        raise SceneLocError(f"{path}: missing {what}") from None
    except OSError as e:
        raise SceneLocError(f"{path}: cannot read {what} ({e.strerror})") from None
    if not head:
        raise SceneLocError(f"{path}: unreadable {what} (empty file)")
    if not head.startswith(_IMAGE_MAGIC):
        raise SceneLocError(f"{path}: unreadable {what} (not a PNG or JPEG image file)")
    return head


def check_image_file(path: Path, what: str = "image") -> None:
    """Cheap check without decoding: ``path`` exists, is non-empty and starts like an image file."""
    _image_head(path, what, 8)


def png_header(head: bytes) -> tuple[int, int, int, int] | None:
    """``(width, height, bit depth, colour type)`` from the IHDR chunk at the start of PNG bytes
    ``head`` (its first 26 bytes suffice), or None when ``head`` does not start with one."""
    if not head.startswith(PNG_MAGIC) or len(head) < 26 or head[12:16] != b"IHDR":
        return None
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", head[16:26])
    return width, height, bit_depth, colour_type


def image_header(path: Path, what: str = "image") -> tuple[int, int, int, int]:
    """``(H, W, channels, bits per channel)`` of an image file: read from a PNG's header without
    decoding (cheap enough for every frame of a dataset), else by decoding the file."""
    png = png_header(_image_head(path, what, 26))   # the checks of check_image_file, one read
    if png is not None:
        w, h, bits, colour_type = png
        return h, w, {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(colour_type, 0), bits
    img = _decode(path, cv2.IMREAD_UNCHANGED, what)
    return img.shape[0], img.shape[1], 1 if img.ndim == 2 else img.shape[2], 8 * img.dtype.itemsize


def read_image(path: Path) -> np.ndarray:
    """RGB image ``(H, W, 3)`` uint8."""
    return cv2.cvtColor(_decode(path, cv2.IMREAD_COLOR, "image"), cv2.COLOR_BGR2RGB)


def read_depth(path: Path, shape: tuple[int, int] | None = None, depth_scale_m: float = 0.001) -> np.ndarray:
    """Depth in metres ``(H, W)`` float32, 0 where the sensor gave none (0 or 65535); the PNG's
    uint16 units are millimetres unless ``depth_scale_m`` (metres per unit) says otherwise."""
    d = _decode(path, cv2.IMREAD_ANYDEPTH, "depth map")
    if d.ndim != 2 or d.dtype != np.uint16:
        raise SceneLocError(f"{path}: depth must be a single-channel uint16 PNG in millimetres, "
                            f"got {d.dtype} with shape {d.shape}")
    if shape is not None and d.shape != tuple(shape):
        raise SceneLocError(f"{path}: depth map is {d.shape[1]}x{d.shape[0]} but its image is {shape[1]}x{shape[0]}")
    return depth_to_metres(d, depth_scale_m)


def depth_to_metres(d: np.ndarray, depth_scale_m: float = 0.001) -> np.ndarray:
    """uint16 depth ``(H, W)`` in units of ``depth_scale_m`` metres -> float32 metres, 0 where the sensor
    gave none (0 or 65535)."""
    if depth_scale_m == 0.001:   # millimetres: divided, as sceneloc always has (bit-identical maps)
        out = d.astype(np.float32) / 1000.0
    else:
        out = d.astype(np.float32) * np.float32(depth_scale_m)
    out[np.isin(d, INVALID_DEPTH_MM)] = 0.0
    return out


def register_depth(depth: np.ndarray, K_depth: np.ndarray, K_colour: np.ndarray,
                   colour_hw: tuple[int, ...]) -> np.ndarray:
    """Depth ``(H_d, W_d)`` of camera ``K_depth`` resampled onto the ``colour_hw`` pixel grid of camera
    ``K_colour``: each colour pixel takes the depth of the depth pixel nearest to its ray (nearest, so no
    depth is blended across an edge). The two cameras are taken to share optical centre and orientation
    (the Kinect's ~2.5 cm baseline is ignored), so a point's depth z is the same in both."""
    map_u, map_v = _registration_maps(tuple(np.asarray(K_depth, float).ravel()),
                                      tuple(np.asarray(K_colour, float).ravel()), tuple(colour_hw[:2]))
    return cv2.remap(depth, map_u, map_v, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


@lru_cache(maxsize=8)
def _registration_maps(K_depth: tuple, K_colour: tuple, hw: tuple) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps ``(H, W)`` float32 for :func:`register_depth`, built once per camera pair."""
    uv = pixels_between_cameras(pixel_grid(*hw), np.reshape(K_colour, (3, 3)), np.reshape(K_depth, (3, 3)))
    return uv[..., 0].astype(np.float32), uv[..., 1].astype(np.float32)


def read_intrinsics(path: Path, image_size: tuple[int, int] | None = None) -> np.ndarray:
    """3x3 K from a file holding a 3x3 matrix, or a single focal length (principal point at the
    centre of ``image_size`` = (H, W), the DSAC*/ACE calibration convention)."""
    try:
        values = [float(v) for v in Path(path).read_text().split()]
    except FileNotFoundError:
        raise SceneLocError(f"{path}: missing calibration file") from None
    except (ValueError, UnicodeDecodeError):
        raise SceneLocError(f"{path}: malformed calibration file (non-numeric entry)") from None
    except OSError as e:
        raise SceneLocError(f"{path}: cannot read calibration file ({e.strerror})") from None
    if len(values) == 9:
        K = np.array(values).reshape(3, 3)
    elif len(values) == 1:
        if image_size is None:
            raise SceneLocError(f"{path}: a single focal length needs the image size")
        h, w = image_size
        K = intrinsics_matrix(values[0], values[0], w / 2.0, h / 2.0)
    else:
        raise SceneLocError(f"{path}: malformed calibration file (expected 1 focal length or a 3x3 matrix, "
                            f"found {len(values)} numbers)")
    # a 3x3 file is checked against its own image later (data.dataset.check_frames): image_size may be another
    # camera's in a dataset of several
    return check_intrinsics(K, None, source=f"{path}")


def parse_intrinsics(spec: str) -> np.ndarray:
    """User option ``fx,fy,cx,cy`` (exactly four numbers) or the path of a 3x3 matrix file -> K.
    (The three-number form ``f,cx,cy`` was never documented and is refused: it read a wrong camera.)"""
    if Path(spec).is_file():
        return read_intrinsics(Path(spec))
    if Path(spec).is_dir():
        raise SceneLocError(f"--intrinsics {spec}: is a directory (expected 'fx,fy,cx,cy' or a 3x3 matrix file)")
    return parse_intrinsics_values(spec)
