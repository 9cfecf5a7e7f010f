"""DNS records for a receive-only leads domain, in zone-file syntax."""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["dns_records", "validate_hostname"]

# Host name syntax from RFC 1035 section 2.3.4 and RFC 1123 section 2.1. A
# label has 1 to 63 letters, digits and hyphens, and does not start or end
# with a hyphen. A name has at most 253 octets in text form.
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def validate_hostname(name: str) -> str:
    """Return *name* lower-cased without a trailing dot.

    Raises:
        ValueError: *name* is not a valid host name; the message names it.
    """
    candidate = name.strip().rstrip(".").lower()
    try:
        candidate = candidate.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"invalid host name {name!r}: not valid IDNA") from None
    labels = candidate.split(".")
    if (
        len(candidate) > 253
        or len(labels) < 2
        or not all(_LABEL.match(label) for label in labels)
    ):
        raise ValueError(
            f"invalid host name {name!r}: expected dot-separated labels of letters, "
            "digits and hyphens, such as leads.example.com"
        )
    return candidate


def dns_records(
    domain: str,
    mx_hosts: Sequence[str],
    *,
    ttl: int = 3600,
    dkim_selector: str = "leadparse",
    dmarc_report_address: str | None = None,
) -> list[str]:
    """Return MX, SPF, DKIM and DMARC records for a domain that only receives mail.

    The MX hosts get priorities 10, 20, 30 in the order given (lower is
    preferred, RFC 5321 section 5.1). SPF ``-all`` declares that no host
    sends mail as this domain, and DMARC ``p=reject`` requests that
    receivers reject mail that claims to come from it. The DKIM record is a
    placeholder for the public key of a selector, needed only if something
    will send as this domain.

    Raises:
        ValueError: a host name is invalid, no MX host is given, or the TTL
            is not positive.
    """
    if not mx_hosts:
        raise ValueError("at least one MX host is required, such as mx1.example.com")
    if ttl <= 0:
        raise ValueError(f"invalid TTL {ttl}: expected a positive number of seconds")
    zone = validate_hostname(domain)
    hosts = [validate_hostname(host) for host in mx_hosts]
    selector = validate_hostname(f"{dkim_selector}.invalid").split(".")[0]

    records = [
        f"{zone}.\t{ttl}\tIN\tMX\t{10 * index} {host}."
        for index, host in enumerate(hosts, start=1)
    ]
    records.append(f'{zone}.\t{ttl}\tIN\tTXT\t"v=spf1 -all"')
    records.append(
        f"{selector}._domainkey.{zone}.\t{ttl}\tIN\tTXT\t"
        '"v=DKIM1; k=rsa; p=<PUBLIC-KEY-BASE64>"'
    )
    dmarc = "v=DMARC1; p=reject; adkim=s; aspf=s"
    if dmarc_report_address:
        dmarc += f"; rua=mailto:{dmarc_report_address}"
    records.append(f'_dmarc.{zone}.\t{ttl}\tIN\tTXT\t"{dmarc}"')
    return records
