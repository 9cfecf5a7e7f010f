"""Property tests: no input makes parse_lead raise anything but its typed errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadparse import Limits, NotEmailError, Policy, parse_lead

from .conftest import FIXTURES

SEEDS = sorted(FIXTURES.rglob("*.eml"))[:80] or [Path(__file__)]
SMALL = Policy(limits=Limits(max_seconds=5.0))


def _seed_bytes() -> list[bytes]:
    return [path.read_bytes() for path in SEEDS if path.suffix == ".eml"] or [
        b"From: a@example.org\r\nSubject: seed\r\n\r\nbody\r\n"
    ]


def _parse(data: bytes) -> None:
    try:
        lead = parse_lead(data, policy=SMALL)
    except NotEmailError:
        return
    assert isinstance(lead.body_text, str)
    assert [d for d in lead.defects if d.code == "stage_failed"] == []
    lead.model_dump_json()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_random_bytes_never_crash(data: bytes) -> None:
    _parse(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_body_after_headers_never_crashes(body: bytes) -> None:
    _parse(
        b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        + body
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_seed_bytes()),
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=1 << 20),
            st.binary(min_size=0, max_size=8),
        ),
        min_size=1,
        max_size=8,
    ),
    st.integers(min_value=0, max_value=1 << 20),
)
def test_mutated_fixtures_never_crash(
    seed: bytes, edits: list[tuple[int, bytes]], cut: int
) -> None:
    data = bytearray(seed)
    for position, chunk in edits:
        index = position % (len(data) + 1)
        data[index : index + len(chunk)] = chunk
    data = data[: max(1, cut % (len(data) + 1))] if cut % 3 == 0 else data
    _parse(bytes(data))


@pytest.mark.parametrize(
    "data",
    [
        b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=\r\n\r\n--\r\n",
        b"From: a@example.org\r\nContent-Type: text/plain; charset=\x80\xff\r\n\r\nhi",
        b"From: a@example.org\r\nContent-Transfer-Encoding: base64\r\n\r\n====",
        b"From: =?utf-8?b?====?= <x@y>\r\nSubject: =?bogus?q?=ZZ?=\r\n\r\n",
        b"From: a@example.org\r\nContent-Type: message/rfc822\r\n\r\nnot a message",
        b"From: a@example.org\r\nDate: Mon, 99 Foo 99999 99:99:99 +9999\r\n\r\n",
        b"From: a@example.org\r\nContent-Type: text/html\r\n\r\n<" + b"<div>" * 5000,
        b"From:\r\n\r\n",
        b"X: y\r\n" * 5000,
    ],
)
def test_hostile_messages_never_crash(data: bytes) -> None:
    _parse(data)
