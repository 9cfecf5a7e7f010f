"""Measure leadparse's dependency choices against the alternatives on one input set.

Run from the repository root::

    python benchmarks/choices.py [--repeat 3] [--json]

The messages are the same as in ``benchmarks/throughput.py``: every ``.eml``
under ``fixtures/`` and every email in the public email corpus beside the
repository. Six comparisons run in one process, each timed as the
median of ``--repeat`` passes after one warm-up pass, with exceptions counted
per library:

1. MIME parsing: stdlib ``email`` with ``policy.compat32``, with
   ``policy.default``, and ``flanker.mime.from_string``. Each parse is timed
   alone and with reading five headers and every part's content type, because
   ``policy.default`` and flanker parse headers lazily.
2. Charset detection: chardet and charset-normalizer on texts written for this
   script and encoded in ten charsets, in full and cut to their first 60
   characters. A detection counts as right when leadparse's
   ``normalize_charset`` maps it to the same codec as the true charset, and as
   decoding right when that codec turns the bytes back into the original text.
3. HTML to text: ``leadparse._html.html_to_text`` (lxml) and BeautifulSoup's
   ``get_text("\\n")`` with the lxml and html.parser tree builders, over every
   text/html part of the messages.
4. Sanitizing those HTML parts: ``leadparse._html.sanitize_html`` (nh3), bleach
   and lxml_html_clean with the same tag allow-list where the library takes one.
5. Reply extraction on the first text/plain part of each message:
   email-reply-parser and ``leadparse.quotes.split_quotes``.
6. Address lists in From, Sender, Reply-To, To and Cc: flanker's
   ``addresslib.address.parse_list`` and ``email.utils.getaddresses``, with the
   number of header values whose lists of lower-cased addresses differ.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from email.policy import default as default_policy
from email.utils import getaddresses
from typing import Any

from throughput import load_inputs, machine

HEADERS_READ = ("from", "to", "subject", "date", "message-id")
ADDRESS_HEADERS = ("from", "sender", "reply-to", "to", "cc")
SHORT_CHARS = 60

# Texts written for this benchmark, one per charset, in the language that
# charset is used for. Each uses characters outside ASCII that the charset
# encodes, and the windows-1252 text uses bytes 0x80-0x9F (curly quote, euro
# sign, oe ligature) that latin-1 leaves to control characters.
CHARSET_TEXTS: dict[str, str] = {
    "windows-1252": (
        "Bonjour, nous sommes une société de logistique à Lyon et nous "
        "souhaitons recevoir un devis pour 250 licences. Pourriez-vous "
        "m’indiquer le prix annuel, les délais de mise en œuvre et si une "
        "démonstration est possible la semaine prochaine ? Le budget prévu "
        "est d’environ 12 000 € HT. Merci d’avance, Élodie Mercier"
    ),
    "iso-8859-2": (
        "Dzień dobry, jesteśmy firmą produkcyjną z Łodzi i chcielibyśmy "
        "otrzymać ofertę na wdrożenie systemu dla 120 użytkowników. Proszę o "
        "przesłanie cennika oraz informacji, czy możliwa jest prezentacja w "
        "przyszłym tygodniu. Zależy nam na szybkim terminie. Pozdrawiam "
        "serdecznie, Grzegorz Wójcik"
    ),
    "koi8-r": (
        "Здравствуйте! Мы небольшая компания из Новосибирска и хотели бы "
        "узнать стоимость годовой подписки на ваш сервис для 40 сотрудников. "
        "Также интересует, можно ли провести демонстрацию продукта на "
        "следующей неделе. С уважением, Андрей Кузнецов"
    ),
    "cp1251": (
        "Добрый день. Наша компания рассматривает переход на новую систему "
        "учёта заявок. Пришлите, пожалуйста, коммерческое предложение и "
        "условия пробного периода. Нас интересует интеграция с почтой и "
        "телефонией. Спасибо, Мария Иванова, отдел закупок"
    ),
    "shift_jis": (
        "お世話になっております。株式会社山田商事の佐藤と申します。"
        "貴社のサービスについて、五十名規模での導入を検討しております。"
        "お見積りと導入スケジュールをお送りいただけますでしょうか。"
        "来週中にデモのお時間をいただけますと幸いです。"
        "よろしくお願いいたします。"
    ),
    "euc-jp": (
        "はじめまして。東京の物流会社で情報システムを担当している田中です。"
        "現在、問い合わせメールの管理に課題があり、貴社の製品に関心を"
        "持ちました。料金体系と無料試用の条件を教えてください。"
        "ご連絡をお待ちしております。"
    ),
    "gb18030": (
        "您好！我们是一家位于上海的贸易公司，正在寻找客户管理软件。"
        "请问贵公司的产品价格是多少？我们大约有八十名员工需要使用。"
        "如果方便的话，希望下周能安排一次在线演示。谢谢！王先生"
    ),
    "big5": (
        "您好，我們是台北的一家設計公司，目前有三十位同事。"
        "想請問貴公司的方案是否提供試用期，以及年費報價。"
        "另外也想了解資料是否儲存在本地伺服器。麻煩您回覆，謝謝。陳小姐"
    ),
    "euc-kr": (
        "안녕하세요. 부산에 있는 제조업체의 구매 담당자입니다. "
        "귀사의 솔루션을 직원 육십 명이 사용할 경우 견적을 받고 싶습니다. "
        "다음 주에 온라인 시연이 가능한지도 알려 주시기 바랍니다. "
        "감사합니다. 김민수 드림"
    ),
    "utf-8": (
        "Guten Tag, wir sind ein Maschinenbauunternehmen aus Köln und möchten "
        "ein Angebot für 75 Lizenzen. Unser Büro in Thessaloniki schreibt: "
        "«Καλημέρα, θα θέλαμε μια παρουσίαση του προϊόντος». Können Sie "
        "nächste Woche eine Vorführung anbieten? Grüße, Jürgen Weiß"
    ),
}


def timed(
    func: Callable[[Any], object], items: Iterable[Any], repeat: int
) -> dict[str, Any]:
    """Run *func* on every item: one warm-up pass, then *repeat* timed passes.

    Returns the median and minimum seconds per pass and the exceptions of the
    warm-up pass counted by type.
    """
    items = list(items)
    failures: dict[str, int] = {}
    for item in items:
        try:
            func(item)
        except Exception as exc:
            failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
    seconds: list[float] = []
    for _ in range(repeat):
        started = time.perf_counter()
        for item in items:
            # A bare try costs less than contextlib.suppress in the timed loop.
            try:  # noqa: SIM105
                func(item)
            except Exception:
                pass
        seconds.append(time.perf_counter() - started)
    return {
        "items": len(items),
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "failures": failures,
    }


def _text(value: object) -> str:
    text = str(value)
    if any("\udc80" <= ch <= "\udcff" for ch in text):
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text.replace("\r", "").replace("\n", "")


def _part_text(part: Message) -> str | None:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return None
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def collect_parts(
    raws: list[bytes],
) -> tuple[list[str], list[str], list[str]]:
    """Return the HTML parts, first plain-text bodies and address header values."""
    html_parts: list[str] = []
    plain_bodies: list[str] = []
    address_values: list[str] = []
    for raw in raws:
        message = BytesParser(policy=compat32).parsebytes(raw)
        for name in ADDRESS_HEADERS:
            for value in message.get_all(name) or []:
                text = _text(value).strip()
                if text:
                    address_values.append(text)
        first_plain = None
        for part in message.walk():
            if part.is_multipart() or part.get_filename():
                continue
            ctype = part.get_content_type()
            if ctype == "text/html":
                text = _part_text(part)
                if text and text.strip():
                    html_parts.append(text)
            elif ctype == "text/plain" and first_plain is None:
                first_plain = _part_text(part)
        if first_plain and first_plain.strip():
            plain_bodies.append(first_plain.replace("\r\n", "\n").replace("\r", "\n"))
    return html_parts, plain_bodies, address_values


def bench_mime(raws: list[bytes], repeat: int) -> dict[str, Any]:
    """Compare stdlib compat32, stdlib policy.default and flanker."""
    from flanker import mime

    def stdlib_read(message: Message) -> None:
        for name in HEADERS_READ:
            str(message.get(name, ""))
        for part in message.walk():
            part.get_content_type()

    def compat32_parse(raw: bytes) -> object:
        return BytesParser(policy=compat32).parsebytes(raw)

    def default_parse(raw: bytes) -> object:
        return BytesParser(policy=default_policy).parsebytes(raw)

    def flanker_parse(raw: bytes) -> object:
        return mime.from_string(raw)

    def flanker_read(raw: bytes) -> None:
        message = mime.from_string(raw)
        for name in HEADERS_READ:
            str(message.headers.get(name, ""))
        for part in message.walk(with_self=True):
            str(part.content_type)

    return {
        "stdlib compat32": {
            "parse": timed(compat32_parse, raws, repeat),
            "parse+read": timed(
                lambda raw: stdlib_read(compat32_parse(raw)), raws, repeat
            ),
        },
        "stdlib policy.default": {
            "parse": timed(default_parse, raws, repeat),
            "parse+read": timed(
                lambda raw: stdlib_read(
                    BytesParser(policy=default_policy).parsebytes(raw)
                ),
                raws,
                repeat,
            ),
        },
        "flanker": {
            "parse": timed(flanker_parse, raws, repeat),
            "parse+read": timed(flanker_read, raws, repeat),
        },
    }


def charset_samples() -> list[tuple[str, str, str, bytes]]:
    """Return (charset, length label, text, encoded bytes) for each sample."""
    samples = []
    for charset, text in CHARSET_TEXTS.items():
        for label, cut in (("full", text), ("short", text[:SHORT_CHARS])):
            samples.append((charset, label, cut, cut.encode(charset)))
    return samples


def bench_charsets(repeat: int) -> dict[str, Any]:
    """Compare chardet and charset-normalizer on the encoded texts."""
    import chardet
    import charset_normalizer

    from leadparse._charsets import normalize_charset

    def with_chardet(data: bytes) -> tuple[str | None, float]:
        result = chardet.detect(data)
        return result.get("encoding"), float(result.get("confidence") or 0.0)

    def with_normalizer(data: bytes) -> tuple[str | None, float]:
        best = charset_normalizer.from_bytes(data).best()
        if best is None:
            return None, 0.0
        return best.encoding, 1.0 - float(best.chaos)

    samples = charset_samples()
    results: dict[str, Any] = {
        "samples": len(samples),
        "sample_bytes": {
            label: [len(s[3]) for s in samples if s[1] == label]
            for label in ("full", "short")
        },
    }
    for name, detect in (
        ("chardet", with_chardet),
        ("charset-normalizer", with_normalizer),
    ):
        rows = []
        for charset, label, text, data in samples:
            found, confidence = detect(data)
            codec = normalize_charset(found)
            decoded = None
            if codec:
                try:
                    decoded = data.decode(codec)
                except (UnicodeDecodeError, LookupError):
                    decoded = None
            rows.append(
                {
                    "charset": charset,
                    "length": label,
                    "detected": found,
                    "confidence": round(confidence, 3),
                    "label_right": codec == normalize_charset(charset),
                    "decodes_right": decoded == text,
                }
            )
        timing = timed(lambda sample, d=detect: d(sample[3]), samples, repeat)
        results[name] = {
            "timing": timing,
            "label_right": {
                label: sum(r["label_right"] for r in rows if r["length"] == label)
                for label in ("full", "short")
            },
            "decodes_right": {
                label: sum(r["decodes_right"] for r in rows if r["length"] == label)
                for label in ("full", "short")
            },
            "rows": rows,
        }
    return results


def bench_html(html_parts: list[str], repeat: int) -> dict[str, Any]:
    """Compare HTML to text with lxml (leadparse) and BeautifulSoup."""
    from bs4 import BeautifulSoup

    from leadparse._html import html_to_text

    return {
        "leadparse html_to_text (lxml)": timed(html_to_text, html_parts, repeat),
        'BeautifulSoup(html, "lxml").get_text': timed(
            lambda html: BeautifulSoup(html, "lxml").get_text("\n"), html_parts, repeat
        ),
        'BeautifulSoup(html, "html.parser").get_text': timed(
            lambda html: BeautifulSoup(html, "html.parser").get_text("\n"),
            html_parts,
            repeat,
        ),
    }


def bench_sanitizers(html_parts: list[str], repeat: int) -> dict[str, Any]:
    """Compare nh3 (leadparse), bleach and lxml_html_clean."""
    from leadparse._html import _ALLOWED_ATTRIBUTES, _ALLOWED_TAGS, sanitize_html

    results: dict[str, Any] = {
        "leadparse sanitize_html (nh3)": timed(sanitize_html, html_parts, repeat)
    }
    try:
        import bleach
    except ImportError:
        results["bleach"] = {"skipped": "bleach is not installed"}
    else:
        attributes = {tag: sorted(names) for tag, names in _ALLOWED_ATTRIBUTES.items()}
        results["bleach"] = timed(
            lambda html: bleach.clean(
                html,
                tags=_ALLOWED_TAGS,
                attributes=attributes,
                protocols={"http", "https", "mailto", "tel", "cid", "data"},
                strip=True,
                strip_comments=True,
            ),
            html_parts,
            repeat,
        )
    try:
        from lxml_html_clean import Cleaner
    except ImportError:
        results["lxml_html_clean"] = {"skipped": "lxml_html_clean is not installed"}
    else:
        cleaner = Cleaner(
            allow_tags=_ALLOWED_TAGS,
            remove_unknown_tags=False,
            safe_attrs_only=True,
            comments=True,
            javascript=True,
            style=True,
        )
        results["lxml_html_clean"] = timed(cleaner.clean_html, html_parts, repeat)
    return results


def bench_replies(plain_bodies: list[str], repeat: int) -> dict[str, Any]:
    """Compare email-reply-parser and leadparse's quote splitting."""
    from email_reply_parser import EmailReplyParser

    from leadparse.quotes import split_quotes

    return {
        "email-reply-parser parse_reply": timed(
            EmailReplyParser.parse_reply, plain_bodies, repeat
        ),
        "leadparse quotes.split_quotes": timed(split_quotes, plain_bodies, repeat),
    }


def bench_addresses(values: list[str], repeat: int) -> dict[str, Any]:
    """Compare flanker's parse_list and email.utils.getaddresses."""
    from flanker.addresslib import address

    def with_flanker(value: str) -> list[str]:
        return [str(item.address).lower() for item in address.parse_list(value)]

    def with_stdlib(value: str) -> list[str]:
        return [addr.lower() for _, addr in getaddresses([value]) if addr]

    differ = 0
    flanker_empty = 0
    stdlib_empty = 0
    for value in values:
        try:
            flanker_result = with_flanker(value)
        except Exception:
            flanker_result = []
        stdlib_result = with_stdlib(value)
        differ += flanker_result != stdlib_result
        flanker_empty += not flanker_result
        stdlib_empty += not stdlib_result
    return {
        "header_values": len(values),
        "results_differ": differ,
        "flanker_found_none": flanker_empty,
        "getaddresses_found_none": stdlib_empty,
        "flanker parse_list": timed(with_flanker, values, repeat),
        "email.utils.getaddresses": timed(with_stdlib, values, repeat),
    }


def _failures(row: dict[str, Any]) -> int:
    return sum(row.get("failures", {}).values())


def print_report(report: dict[str, Any]) -> None:
    """Print every comparison as a plain-text table."""
    info = report["machine"]
    print(
        f"CPU: {info['cpu_model'] or '?'} ({info['cores']} cores), "
        f"platform.processor()={info['platform_processor']!r}, "
        f"Python {info['python']}, {info['date_utc']}, commit {info['commit']}, "
        f"median of {report['repeat']} passes after one warm-up"
    )
    print(f"messages: {report['messages']}, {report['bytes']} bytes")

    print("\n1. MIME parsing (s per pass over all messages; exceptions)")
    for name, row in report["mime"].items():
        print(
            f"  {name:<24} parse {row['parse']['median_s']:8.3f} s "
            f"{_failures(row['parse']):>4} exc | parse+read "
            f"{row['parse+read']['median_s']:8.3f} s "
            f"{_failures(row['parse+read']):>4} exc "
            f"{row['parse+read']['failures'] or ''}"
        )

    charsets = report["charsets"]
    print(
        f"\n2. Charset detection ({charsets['samples']} samples: "
        f"{len(CHARSET_TEXTS)} charsets, full "
        f"{min(charsets['sample_bytes']['full'])}-"
        f"{max(charsets['sample_bytes']['full'])} bytes and first "
        f"{SHORT_CHARS} characters "
        f"{min(charsets['sample_bytes']['short'])}-"
        f"{max(charsets['sample_bytes']['short'])} bytes)"
    )
    for name in ("chardet", "charset-normalizer"):
        row = charsets[name]
        per_sample_ms = row["timing"]["median_s"] / row["timing"]["items"] * 1000
        print(
            f"  {name:<20} {per_sample_ms:8.3f} ms/sample  "
            f"label right: full {row['label_right']['full']}/10, "
            f"short {row['label_right']['short']}/10  "
            f"decodes right: full {row['decodes_right']['full']}/10, "
            f"short {row['decodes_right']['short']}/10"
        )
    print("  detected labels (full / short):")
    for charset in CHARSET_TEXTS:
        cells = []
        for name in ("chardet", "charset-normalizer"):
            found = [
                f"{r['detected']}({r['confidence']})"
                for r in charsets[name]["rows"]
                if r["charset"] == charset
            ]
            cells.append(f"{name}: {' / '.join(found)}")
        print(f"    {charset:<13} {'; '.join(cells)}")

    for title, key in (
        ("3. HTML to text", "html"),
        ("4. HTML sanitizing", "sanitize"),
        ("5. Reply extraction", "replies"),
    ):
        first = next(iter(report[key].values()))
        print(f"\n{title} ({first.get('items', 0)} inputs; s per pass; exceptions)")
        for name, row in report[key].items():
            if "skipped" in row:
                print(f"  {name:<44} skipped: {row['skipped']}")
                continue
            print(
                f"  {name:<44} {row['median_s']:8.4f} s {_failures(row):>4} exc "
                f"{row['failures'] or ''}"
            )

    addresses = report["addresses"]
    print(
        f"\n6. Address lists ({addresses['header_values']} header values; "
        f"{addresses['results_differ']} give different address lists; "
        f"flanker found none in {addresses['flanker_found_none']}, "
        f"getaddresses in {addresses['getaddresses_found_none']})"
    )
    for name in ("flanker parse_list", "email.utils.getaddresses"):
        row = addresses[name]
        print(
            f"  {name:<26} {row['median_s']:8.4f} s {_failures(row):>4} exc "
            f"{row['failures'] or ''}"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the six comparisons and print a table or JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="timed passes per measurement after one warm-up pass (default 3)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    # flanker and mail parsers log a warning per odd input, and BeautifulSoup
    # warns about inputs that look like file names; neither is a result here.
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")

    inputs, counts = load_inputs()
    raws = [raw for _, _, raw in inputs]
    html_parts, plain_bodies, address_values = collect_parts(raws)
    report: dict[str, Any] = {
        "machine": machine(),
        "repeat": args.repeat,
        "messages": len(raws),
        "bytes": sum(len(raw) for raw in raws),
        "inputs": counts,
        "mime": bench_mime(raws, args.repeat),
        "charsets": bench_charsets(args.repeat),
        "html": bench_html(html_parts, args.repeat),
        "sanitize": bench_sanitizers(html_parts, args.repeat),
        "replies": bench_replies(plain_bodies, args.repeat),
        "addresses": bench_addresses(address_values, args.repeat),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
