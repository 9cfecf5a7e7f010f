"""Content-addressed attachment storage on the local file system, with signed URLs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from leadparse.errors import LeadparseError

__all__ = ["FileSystemStore", "InvalidSignatureError", "StoreError"]

logger = logging.getLogger(__name__)

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
URL_SCHEME = "leadparse-store"


class StoreError(LeadparseError, ValueError):
    """A store request names no stored object or carries invalid arguments."""


class InvalidSignatureError(StoreError):
    """A signed URL was tampered with, is malformed, or has expired."""


class FileSystemStore:
    """Store attachment bytes under a root folder, addressed by their SHA-256.

    An object lives at ``root/ab/cd/<sha256>`` and its URL is
    ``leadparse-store:///<sha256>``. The filename and content type given to
    :meth:`put` are not part of the path, so no filename can make the store
    write outside *root*. Writing the same bytes twice writes nothing the
    second time.

    Args:
        root: folder that holds the objects; created when missing.
        secret: key for :meth:`sign` and :meth:`verify`; signing is
            unavailable without one.
    """

    def __init__(self, root: str | os.PathLike[str], *, secret: bytes | None = None):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._secret = secret

    def __repr__(self) -> str:
        return f"FileSystemStore({str(self.root)!r})"

    def path_for(self, sha256: str) -> Path:
        """Return where the object with this SHA-256 hex digest is stored.

        Raises:
            StoreError: *sha256* is not 64 lower-case hex digits.
        """
        if not _SHA256_HEX.fullmatch(sha256):
            raise StoreError(
                f"invalid sha256 {sha256[:80]!r}: expected 64 lower-case hex digits"
            )
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put(
        self,
        data: bytes,
        *,
        sha256: str,
        filename: str | None = None,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Store *data* unless an object with the same digest exists; return its URL.

        The file is written to a temporary name in the target folder, flushed
        with fsync, then renamed with ``os.replace``, so a reader never sees a
        partial object.

        Raises:
            StoreError: *sha256* is malformed or is not the digest of *data*.
        """
        target = self.path_for(sha256)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise StoreError(
                f"sha256 {sha256!r} does not match the {len(data)} bytes given; "
                "pass hashlib.sha256(data).hexdigest()"
            )
        if target.is_file():
            return self.url_for(sha256)

        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temp_name = tempfile.mkstemp(
            dir=target.parent, prefix=".tmp-", suffix=".part"
        )
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_name, target)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        self._fsync_folder(target.parent)
        logger.debug("stored object %s (%d bytes)", sha256, len(data))
        return self.url_for(sha256)

    def open(self, url: str) -> bytes:
        """Return the bytes stored at *url* (a URL that :meth:`put` returned).

        Raises:
            StoreError: the URL is not a store URL or names no stored object.
        """
        sha256 = self._sha256_of(url)
        try:
            return self.path_for(sha256).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"no stored object for {url!r}") from None

    def url_for(self, sha256: str) -> str:
        """Return the store URL of the object with this digest."""
        return f"{URL_SCHEME}:///{sha256}"

    def sign(self, url: str, *, expires_in: int, now: float | None = None) -> str:
        """Return *url* with an expiry time and an HMAC-SHA256 signature appended.

        Args:
            url: a URL that :meth:`put` returned.
            expires_in: seconds from *now* until the signature expires.
            now: Unix time to count from; defaults to ``time.time()``.

        Raises:
            StoreError: the store has no secret, or *expires_in* is not positive.
        """
        if expires_in <= 0:
            raise StoreError(
                f"expires_in must be a positive number of seconds, got {expires_in!r}"
            )
        expires = int((time.time() if now is None else now) + expires_in)
        signature = self._signature(url, expires)
        query = urlencode({"expires": expires, "signature": signature})
        return f"{url}?{query}"

    def verify(self, signed_url: str, *, now: float | None = None) -> str:
        """Check a URL made by :meth:`sign` and return the plain URL.

        Raises:
            InvalidSignatureError: the URL is malformed, its signature does not
                match, or its expiry time has passed.
        """
        url, _, query = signed_url.partition("?")
        params = parse_qs(query, keep_blank_values=True, strict_parsing=False)
        expires_values = params.get("expires", [])
        signatures = params.get("signature", [])
        if (
            len(expires_values) != 1
            or len(signatures) != 1
            or set(params)
            != {
                "expires",
                "signature",
            }
        ):
            raise InvalidSignatureError(
                "signed URL must carry exactly one 'expires' and one 'signature' "
                "parameter; sign the URL with FileSystemStore.sign"
            )
        try:
            expires = int(expires_values[0])
        except ValueError:
            raise InvalidSignatureError(
                f"invalid expires value {expires_values[0][:40]!r} in signed URL"
            ) from None
        expected = self._signature(url, expires)
        if not hmac.compare_digest(expected.encode(), signatures[0].encode()):
            raise InvalidSignatureError("signed URL signature does not match")
        current = time.time() if now is None else now
        if current >= expires:
            raise InvalidSignatureError(
                f"signed URL expired at Unix time {expires}; request a new one"
            )
        return url

    def _signature(self, url: str, expires: int) -> str:
        if not self._secret:
            raise StoreError(
                "this store has no secret: create it with "
                "FileSystemStore(root, secret=...) to sign URLs"
            )
        # The newline separates the two fields, so no (url, expires) pair
        # produces the same message as another.
        message = f"{url}\n{expires}".encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def _sha256_of(self, url: str) -> str:
        parts = urlsplit(url)
        sha256 = parts.path.lstrip("/")
        if parts.scheme != URL_SCHEME or parts.netloc or parts.query or not sha256:
            raise StoreError(
                f"{url[:120]!r} is not a store URL: expected {URL_SCHEME}:///<sha256>"
            )
        return sha256

    @staticmethod
    def _fsync_folder(folder: Path) -> None:
        # Make the rename itself durable (POSIX); Windows cannot open folders.
        try:
            descriptor = os.open(folder, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
