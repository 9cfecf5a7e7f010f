"""Phone number discovery and E.164 formatting with phonenumbers."""

from __future__ import annotations

from collections.abc import Iterable

import phonenumbers

__all__ = ["find_phones", "region_for_domain", "to_e164"]

# Country-code TLDs whose ISO region differs from the TLD.
_TLD_REGION = {"uk": "GB", "eu": ""}

# Generic TLDs, which name no country.
_GENERIC_TLDS = frozenset(
    {
        "com",
        "org",
        "net",
        "edu",
        "gov",
        "mil",
        "int",
        "info",
        "biz",
        "io",
        "co",
        "ai",
        "app",
        "dev",
        "me",
        "tv",
        "cc",
        "xyz",
        "tech",
        "cloud",
        "online",
    }
)


def region_for_domain(domain: str | None) -> str | None:
    """Return the ISO region of a country-code top-level domain, if it is one."""
    if not domain or "." not in domain:
        return None
    tld = domain.rsplit(".", 1)[1].lower()
    if tld in _GENERIC_TLDS or len(tld) != 2:
        return None
    region = _TLD_REGION.get(tld, tld.upper())
    if not region or region not in phonenumbers.SUPPORTED_REGIONS:
        return None
    return region


def to_e164(text: str, regions: Iterable[str]) -> str | None:
    """Parse one phone number written in *text*, trying each region in order."""
    for region in [*regions, None]:
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(
                number, phonenumbers.PhoneNumberFormat.E164
            )
    return None


def find_phones(text: str, regions: Iterable[str]) -> list[str]:
    """Find valid phone numbers in free text, in order, as unique E.164 strings.

    Numbers written with a leading ``+`` or ``00`` carry their own country;
    others are tried against *regions* in order (for example the signature's,
    the sender domain's, then the policy default).
    """
    found: list[str] = []
    tried = [r for r in dict.fromkeys(regions) if r]
    for region in tried or ["US"]:
        matcher = phonenumbers.PhoneNumberMatcher(
            text, region, leniency=phonenumbers.Leniency.VALID
        )
        for match in matcher:
            value = phonenumbers.format_number(
                match.number, phonenumbers.PhoneNumberFormat.E164
            )
            if value not in found:
                found.append(value)
        if found:
            break
    return found
