"""Downloading dataset files from mirrors, verified and moved into place atomically."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from .registry import MIRROR_ENV, DatasetSpec, FileSpec

__all__ = ["DownloadError", "download_file", "file_urls"]

logger = logging.getLogger(__name__)

TIMEOUT_S = 10.0
_CHUNK = 1 << 16
_PROGRESS_EVERY_S = 5.0


class DownloadError(OSError):
    """No mirror delivered a file with the published size and checksum."""


def file_urls(
    dataset: DatasetSpec, file_name: str, mirrors: Sequence[str] | None = None
) -> list[str]:
    """The URLs to try for one file, in order.

    Args:
        dataset: the dataset's registry entry.
        file_name: the file to fetch.
        mirrors: base URLs to use instead of ``dataset.mirrors`` (``()`` for none).

    Returns:
        ``$MULTIROBUST_DATA_MIRROR/{folder}/{file}`` first if that variable is set, then
        ``{mirror}{file}`` for each mirror; duplicates removed.
    """
    urls: list[str] = []
    env_mirror = os.environ.get(MIRROR_ENV, "").strip()
    if env_mirror:
        urls.append(f"{env_mirror.rstrip('/')}/{dataset.folder}/{file_name}")
    for base in dataset.mirrors if mirrors is None else mirrors:
        urls.append(f"{base.rstrip('/')}/{file_name}")
    return list(dict.fromkeys(urls))


def _fetch_one(url: str, file_spec: FileSpec, folder: Path, timeout: float) -> Path:
    """Stream one URL into a temporary file in ``folder``, verify it and move it into place."""
    target = folder / file_spec.name
    checksum = file_spec.checksum
    hasher = hashlib.new(checksum[0]) if checksum else None
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{file_spec.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        size = 0
        start = last_report = time.monotonic()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                size += len(chunk)
                if hasher is not None:
                    hasher.update(chunk)
                now = time.monotonic()
                if now - last_report >= _PROGRESS_EVERY_S:
                    last_report = now
                    total = f" of {file_spec.size / 1e6:.1f}" if file_spec.size else ""
                    logger.info("%s: %.1f%s MB", file_spec.name, size / 1e6, total)
        if file_spec.size is not None and size != file_spec.size:
            raise DownloadError(
                f"{url}: got {size} bytes, expected {file_spec.size} (checksum not verified)"
            )
        if checksum is not None and hasher is not None and hasher.hexdigest() != checksum[1]:
            raise DownloadError(
                f"{url}: {checksum[0]} checksum mismatch: expected {checksum[1]}, "
                f"got {hasher.hexdigest()}"
            )
        os.replace(tmp, target)
        logger.info(
            "Downloaded %s (%d bytes in %.1f s) to %s", url, size, time.monotonic() - start, target
        )
        return target
    finally:
        tmp.unlink(missing_ok=True)


def download_file(
    file_spec: FileSpec,
    folder: Path,
    urls: Sequence[str],
    *,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Download a file, trying each URL until one gives the published size and checksum.

    Each attempt streams into a temporary file in ``folder`` and is moved to
    ``folder / file_spec.name`` with `os.replace` only once verified, so neither a failed
    download nor a concurrent reader ever sees a partial file under the final name. A failed
    download leaves nothing behind: the folders it had to create are removed again.

    Args:
        file_spec: the file's registry entry (name, size, checksum).
        folder: where to put it; created if missing (and removed again if it stays empty
            because every URL failed).
        urls: full URLs to try, in order.
        timeout: socket timeout per connection attempt, in seconds.

    Returns:
        The path of the downloaded file.

    Raises:
        DownloadError: if every URL failed; the message holds the last error.
    """
    if not urls:
        raise DownloadError(f"no URL to download {file_spec.name} from")
    created = _make_folder(folder)
    try:
        return _try_urls(file_spec, folder, urls, timeout)
    except BaseException:
        _remove_empty(created)
        raise


def _make_folder(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the ones created, outermost first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return missing[::-1]


def _remove_empty(created: list[Path]) -> None:
    """Remove the folders a failed download created, innermost first, while they are empty.

    Another process may have put a file there meanwhile: such a folder (and its parents) stays.
    """
    for path in reversed(created):
        try:
            path.rmdir()
        except OSError:
            return


def _try_urls(file_spec: FileSpec, folder: Path, urls: Sequence[str], timeout: float) -> Path:
    """Each URL in turn until one delivers the verified file, else `DownloadError` (last error)."""
    last = ""
    for url in urls:
        logger.info("Downloading %s", url)
        try:
            return _fetch_one(url, file_spec, folder, timeout)
        except DownloadError as exc:
            last = str(exc)
        except urllib.error.HTTPError as exc:
            last = f"{url}: HTTP {exc.code} {exc.reason}"
        except urllib.error.URLError as exc:
            last = f"{url}: {exc.reason}"
        except (OSError, ValueError, http.client.HTTPException) as exc:
            # timeouts, resets, truncated responses, malformed URLs
            last = f"{url}: {type(exc).__name__}: {exc}"
        logger.warning("Download failed: %s", last)
    raise DownloadError(last)
