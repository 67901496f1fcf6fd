"""Image parts of a request -> checked image files: `data:` URLs, local files under a configured root, and (only
when enabled) http(s) URLs; every refusal names the field."""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image, UnidentifiedImageError

from grok.serve.engine import ImageFile
from grok.serve.errors import RequestError
from grok.serve.settings import ImageSources, Limits

# PIL format -> the suffix grok.data.io reads it with
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "BMP": ".bmp"}


def read_image_url(url: str, field: str, limits: Limits, sources: ImageSources) -> ImageFile:
    """The image a URL names, checked: a real PNG/JPEG/TIFF/BMP within the byte and pixel limits."""
    if not isinstance(url, str) or not url:
        raise RequestError(400, field, "expected an image URL string (data:image/png;base64,...)")
    scheme = urlparse(url).scheme.lower() if "://" in url or url.startswith("data:") else ""
    if scheme == "data":
        data = _data_url(url, field, limits)
    elif scheme in ("http", "https"):
        if not sources.allow_remote:
            raise RequestError(
                400,
                field,
                "http(s) image URLs are refused by this server (images.allow_remote=false); send the image inline "
                "as a data: URL",
            )
        data = _fetch(url, field, limits, sources.remote_timeout_s)
    elif scheme in ("file", ""):
        data = _local_file(unquote(urlparse(url).path) if scheme else url, field, limits, sources.local_root)
    else:
        raise RequestError(400, field, f"unsupported URL scheme '{scheme}'; expected a data: URL")
    return check_image(data, field, limits)


def check_image(data: bytes, field: str, limits: Limits) -> ImageFile:
    """Refuse what is not an image of an accepted format, or is larger than the limits."""
    _check_bytes(len(data), field, limits)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format, (width, height) = image.format, image.size
    except Image.DecompressionBombError as error:
        raise RequestError(413, field, f"image too large: {error}") from error
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise RequestError(400, field, f"not an image ({'/'.join(FORMATS)} expected)") from error
    if image_format not in FORMATS:
        raise RequestError(400, field, f"image format {image_format} is not accepted; expected {'/'.join(FORMATS)}")
    if width * height > limits.max_image_pixels:
        raise RequestError(
            413,
            field,
            f"image is {width}x{height} pixels, over the limit of {limits.max_image_pixels:,} pixels "
            "(limits.max_image_pixels)",
        )
    return ImageFile(data=data, suffix=FORMATS[image_format])


def _check_bytes(size: int, field: str, limits: Limits) -> None:
    if size > limits.max_image_bytes:
        limit = limits.max_image_bytes
        raise RequestError(413, field, f"image is {size:,} bytes, over the limit of {limit:,} (limits.max_image_bytes)")


def _data_url(url: str, field: str, limits: Limits) -> bytes:
    header, comma, payload = url.partition(",")
    if not comma or not header.lower().endswith(";base64"):
        raise RequestError(400, field, "expected a base64 data URL: data:image/png;base64,<data>")
    _check_bytes(len(payload) * 3 // 4 - 2, field, limits)  # before decoding anything large
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise RequestError(400, field, f"the data URL is not valid base64 ({error})") from error


def _local_file(path: str, field: str, limits: Limits, root: str | None) -> bytes:
    if root is None:
        raise RequestError(
            400, field, "local image paths are refused by this server (images.local_root is not set); send a data: URL"
        )
    base = Path(root).resolve()
    target = (base / path).resolve()
    if not target.is_relative_to(base):
        raise RequestError(403, field, f"path is outside the image root {base} (images.local_root)")
    if not target.is_file():
        raise RequestError(404, field, f"no file {path} under the image root (images.local_root)")
    _check_bytes(target.stat().st_size, field, limits)
    return target.read_bytes()


def _fetch(url: str, field: str, limits: Limits, timeout_s: float) -> bytes:
    import httpx

    try:
        with httpx.stream("GET", url, timeout=timeout_s, follow_redirects=False) as response:
            if response.status_code != 200:
                raise RequestError(400, field, f"fetching the image returned HTTP {response.status_code}")
            data = bytearray()
            for chunk in response.iter_bytes():
                data += chunk
                _check_bytes(len(data), field, limits)
            return bytes(data)
    except httpx.HTTPError as error:
        raise RequestError(400, field, f"could not fetch the image ({type(error).__name__})") from error
