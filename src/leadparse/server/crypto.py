"""AES-GCM encryption of raw messages at rest, with key ids for rotation."""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["DecryptionError", "RawCipher"]

_NONCE_BYTES = 12
"""96-bit nonces, the size NIST SP 800-38D recommends for GCM."""


class DecryptionError(ValueError):
    """A stored message cannot be decrypted: its key is missing or the data changed."""


class RawCipher:
    """Encrypt new messages with the current key; decrypt with any known key.

    Each stored blob is ``nonce || ciphertext-with-tag``. The associated data
    binds a blob to its row (the request id), so a blob copied onto another row
    fails to decrypt.

    Args:
        keys: key id mapped to a 16, 24 or 32 byte AES key.
        current_key_id: id of the key that encrypts new messages; ``None``
            keeps the keys for decryption only, and new messages are stored
            in clear.
    """

    def __init__(self, keys: Mapping[str, bytes], current_key_id: str | None) -> None:
        # Imported here so the store works without the cryptography package
        # when encryption is off.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if current_key_id is not None and current_key_id not in keys:
            raise ValueError(f"current key id {current_key_id!r} is not among the keys")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.current_key_id = current_key_id

    def encrypt(self, data: bytes, associated_data: bytes) -> tuple[str, bytes]:
        """Encrypt *data* with the current key; return the key id and the blob."""
        if self.current_key_id is None:
            raise ValueError("no current key id is configured for encryption")
        nonce = os.urandom(_NONCE_BYTES)
        cipher = self._ciphers[self.current_key_id]
        return self.current_key_id, nonce + cipher.encrypt(nonce, data, associated_data)

    def decrypt(self, key_id: str, blob: bytes, associated_data: bytes) -> bytes:
        """Decrypt a blob written by :meth:`encrypt` with key *key_id*.

        Raises:
            DecryptionError: the key id is not configured, or authentication
                failed because the blob, its row or the key differ.
        """
        from cryptography.exceptions import InvalidTag

        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise DecryptionError(
                f"no key with id {key_id!r} is configured; add it to "
                "encryption.keys to read messages stored with it"
            )
        nonce, ciphertext = blob[:_NONCE_BYTES], blob[_NONCE_BYTES:]
        try:
            return cipher.decrypt(nonce, ciphertext, associated_data)
        except InvalidTag:
            raise DecryptionError(
                f"stored message failed authentication with key {key_id!r}"
            ) from None
