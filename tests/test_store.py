"""FileSystemStore: content addressing, atomic writes, dedupe and signed URLs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from leadparse.errors import LeadparseError
from leadparse.store import FileSystemStore, InvalidSignatureError, StoreError

DATA = b"quote request attachment"
DIGEST = hashlib.sha256(DATA).hexdigest()
SECRET = b"test-secret-key"
NOW = 1_700_000_000.0


def test_put_content_addressed_path(tmp_path: Path) -> None:
    store = FileSystemStore(tmp_path)

    url = store.put(
        DATA, sha256=DIGEST, filename="q.pdf", content_type="application/pdf"
    )

    assert url == f"leadparse-store:///{DIGEST}"
    assert (tmp_path / DIGEST[:2] / DIGEST[2:4] / DIGEST).read_bytes() == DATA
    assert store.open(url) == DATA


def test_put_duplicate_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileSystemStore(tmp_path)
    first = store.put(DATA, sha256=DIGEST, filename="a.bin", content_type="x/y")
    replaced: list[str] = []
    monkeypatch.setattr(os, "replace", lambda src, dst: replaced.append(str(dst)))

    second = store.put(DATA, sha256=DIGEST, filename="b.bin", content_type="x/y")

    assert second == first
    assert replaced == []
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [DIGEST]


def test_put_leaves_no_temp_files(tmp_path: Path) -> None:
    store = FileSystemStore(tmp_path)

    store.put(DATA, sha256=DIGEST, filename=None, content_type="x/y")

    assert [p.name for p in tmp_path.rglob(".tmp-*")] == []


def test_filename_traversal_stays_inside_root(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = FileSystemStore(root)

    store.put(DATA, sha256=DIGEST, filename="../../outside.txt", content_type="x/y")

    assert not (tmp_path / "outside.txt").exists()
    assert [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()] == [
        f"{DIGEST[:2]}/{DIGEST[2:4]}/{DIGEST}"
    ]


@pytest.mark.parametrize(
    "digest", ["../../etc/passwd", "ab/../../x", DIGEST.upper(), DIGEST[:-1], ""]
)
def test_invalid_digest_rejected(tmp_path: Path, digest: str) -> None:
    store = FileSystemStore(tmp_path)

    with pytest.raises(StoreError, match="invalid sha256"):
        store.put(DATA, sha256=digest, filename=None, content_type="x/y")


def test_digest_mismatch_rejected(tmp_path: Path) -> None:
    store = FileSystemStore(tmp_path)

    with pytest.raises(StoreError, match="does not match"):
        store.put(b"other bytes", sha256=DIGEST, filename=None, content_type="x/y")
    assert list(tmp_path.rglob("*")) == []


@pytest.mark.parametrize(
    "url",
    [
        "leadparse-store:///../../etc/passwd",
        "file:///etc/passwd",
        f"leadparse-store://host/{DIGEST}",
        "leadparse-store:///",
    ],
)
def test_open_rejects_foreign_urls(tmp_path: Path, url: str) -> None:
    store = FileSystemStore(tmp_path)

    with pytest.raises(StoreError):
        store.open(url)


def test_open_missing_object(tmp_path: Path) -> None:
    store = FileSystemStore(tmp_path)

    with pytest.raises(StoreError, match="no stored object"):
        store.open(store.url_for(DIGEST))


def test_sign_verify_round_trip(tmp_path: Path) -> None:
    store = FileSystemStore(tmp_path, secret=SECRET)
    url = store.url_for(DIGEST)

    signed = store.sign(url, expires_in=300, now=NOW)

    assert signed.startswith(f"{url}?expires=1700000300&signature=")
    assert store.verify(signed, now=NOW + 299) == url


def test_verify_expired(tmp_path: Path) -> None:
    store = FileSystemStore(tmp_path, secret=SECRET)
    signed = store.sign(store.url_for(DIGEST), expires_in=300, now=NOW)

    with pytest.raises(InvalidSignatureError, match="expired at Unix time 1700000300"):
        store.verify(signed, now=NOW + 300)


def test_verify_tampered(tmp_path: Path) -> None:
    store = FileSystemStore(tmp_path, secret=SECRET)
    other = hashlib.sha256(b"other").hexdigest()
    signed = store.sign(store.url_for(DIGEST), expires_in=300, now=NOW)
    later = signed.replace("expires=1700000300", "expires=1800000300")
    swapped = signed.replace(DIGEST, other)
    flipped = signed[:-1] + ("A" if signed[-1] != "A" else "B")

    for bad in (later, swapped, flipped, signed + "&expires=1"):
        with pytest.raises(InvalidSignatureError):
            store.verify(bad, now=NOW)


def test_verify_other_secret(tmp_path: Path) -> None:
    signed = FileSystemStore(tmp_path, secret=SECRET).sign(
        f"leadparse-store:///{DIGEST}", expires_in=60, now=NOW
    )

    with pytest.raises(InvalidSignatureError, match="does not match"):
        FileSystemStore(tmp_path, secret=b"another key").verify(signed, now=NOW)


def test_signature_error_types(tmp_path: Path) -> None:
    store = FileSystemStore(tmp_path, secret=SECRET)

    with pytest.raises(InvalidSignatureError) as caught:
        store.verify("leadparse-store:///x?expires=abc&signature=x", now=NOW)

    assert isinstance(caught.value, LeadparseError)
    assert isinstance(caught.value, ValueError)


def test_sign_without_secret(tmp_path: Path) -> None:
    store = FileSystemStore(tmp_path)

    with pytest.raises(StoreError, match="has no secret"):
        store.sign(store.url_for(DIGEST), expires_in=60, now=NOW)
