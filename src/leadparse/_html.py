"""HTML to plain text, and the allow-list sanitizer for ``body_html``."""

from __future__ import annotations

import re
from dataclasses import dataclass

import lxml.etree
import lxml.html
import nh3

__all__ = ["HtmlText", "html_to_text", "sanitize_html"]

_SKIPPED = frozenset(
    {
        "script",
        "style",
        "head",
        "title",
        "noscript",
        "template",
        "svg",
        "object",
        "iframe",
        "embed",
        "applet",
        "frameset",
        "frame",
        "map",
        "audio",
        "video",
        "canvas",
        "select",
        "button",
        "input",
        "textarea",
    }
)
_PARAGRAPH = frozenset(
    {
        "p",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "blockquote",
        "pre",
        "table",
        "ul",
        "ol",
        "dl",
        "hr",
        "address",
        "figure",
        "form",
        "fieldset",
    }
)
_BLOCK = _PARAGRAPH | frozenset(
    {
        "div",
        "section",
        "article",
        "header",
        "footer",
        "nav",
        "aside",
        "main",
        "li",
        "dt",
        "dd",
        "tr",
        "center",
        "caption",
        "tbody",
        "thead",
        "tfoot",
        "figcaption",
        "details",
        "summary",
    }
)
_CELL = frozenset({"td", "th"})
_HIDDEN_STYLE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|mso-hide\s*:\s*all"
    r"|max-height\s*:\s*0(?:px)?\s*(?:;|$)|font-size\s*:\s*0(?:px)?\s*(?:;|$)",
    re.IGNORECASE,
)
# Outlook desktop opens the quoted message with a block whose only style is a
# thin top border; Outlook on the web marks it with ids.
_OUTLOOK_QUOTE_STYLE = re.compile(
    r"border-top\s*:\s*solid\s+#(?:E1E1E1|B5C4DF)", re.IGNORECASE
)
_QUOTE_IDS = frozenset(
    {"divrplyfwdmsg", "appendonsend", "stopspelling", "x_divrplyfwdmsg"}
)
_QUOTE_CLASSES = frozenset(
    {
        "gmail_quote",
        "gmail_quote_container",
        "moz-cite-prefix",
        "yahoo_quoted",
        "protonmail_quote",
        "x_gmail_quote",
        "zmail_extra",
        "ms-outlook-mobile-reference-message",
    }
)
_SENTINEL = "\ue000"
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]{0,200}\?>")
_SPACES = re.compile(r"[ \t\r\n\f\v\u00a0\u200b]+")
_BLANK_RUN = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class HtmlText:
    """Text rendered from HTML, and where quote markup began in it."""

    text: str
    quote_start: int | None


def _is_quote_marker(element: lxml.html.HtmlElement) -> bool:
    tag = element.tag
    if tag == "blockquote" and (element.get("type") or "").lower() == "cite":
        return True
    element_id = (element.get("id") or "").lower()
    if element_id in _QUOTE_IDS:
        return True
    classes = set((element.get("class") or "").lower().split())
    if classes & _QUOTE_CLASSES:
        return True
    return tag == "div" and bool(
        _OUTLOOK_QUOTE_STYLE.search(element.get("style") or "")
    )


def _is_hidden(element: lxml.html.HtmlElement) -> bool:
    if element.get("hidden") is not None:
        return True
    if (element.get("aria-hidden") or "").lower() == "true" and element.tag != "img":
        return False
    return bool(_HIDDEN_STYLE.search(element.get("style") or ""))


class _Renderer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.current: list[str] = []
        self.quote_marked = False

    def text(self, value: str | None, preformatted: bool) -> None:
        if not value:
            return
        value = value.replace(_SENTINEL, "")
        if preformatted:
            head, *rest = value.split("\n")
            self.current.append(head)
            for line in rest:
                self.newline()
                self.current.append(line)
            return
        value = _SPACES.sub(" ", value)
        if value.startswith(" ") and (
            not self.current or self.current[-1].endswith(" ")
        ):
            value = value[1:]
        if value:
            self.current.append(value)

    def newline(self) -> None:
        self.lines.append("".join(self.current).strip(" "))
        self.current = []

    def ensure_line_break(self) -> None:
        if "".join(self.current).strip(" "):
            self.newline()
        else:
            self.current = []

    def ensure_blank_line(self) -> None:
        self.ensure_line_break()
        if self.lines and self.lines[-1] != "":
            self.lines.append("")

    def cell_separator(self) -> None:
        line = "".join(self.current).rstrip(" ")
        if not line:
            return
        self.current = [line, " " if line.endswith(":") else " | "]

    def mark_quote(self) -> None:
        if not self.quote_marked:
            self.ensure_line_break()
            self.current.append(_SENTINEL)
            self.quote_marked = True

    def finish(self) -> HtmlText:
        self.ensure_line_break()
        lines = [line.strip(" ") for line in self.lines]
        text = _BLANK_RUN.sub("\n\n", "\n".join(lines)).strip("\n")
        index = text.find(_SENTINEL)
        if index < 0:
            return HtmlText(text, None)
        text = text.replace(_SENTINEL, "")
        stripped_prefix = text[:index].rstrip("\n")
        # An empty prefix means the whole message sits inside quote markup,
        # as when an HTML reply was written above nothing.
        return HtmlText(text, len(stripped_prefix) if stripped_prefix else None)


def _render(root: lxml.html.HtmlElement, renderer: _Renderer) -> None:
    # An explicit stack, not recursion, so deeply nested markup cannot
    # exhaust the interpreter's recursion limit.
    stack: list[tuple[str, lxml.html.HtmlElement, bool]] = [("open", root, False)]
    while stack:
        action, element, pre = stack.pop()
        if action == "tail":
            renderer.text(element.tail, pre)
            continue
        tag = element.tag if isinstance(element.tag, str) else ""
        tag = tag.lower()
        if action == "close":
            if tag in _PARAGRAPH:
                renderer.ensure_blank_line()
            elif tag in _BLOCK:
                renderer.ensure_line_break()
            continue

        if not tag or tag in _SKIPPED or _is_hidden(element):
            stack.append(("tail", element, pre))
            continue
        if _is_quote_marker(element):
            renderer.mark_quote()
        if tag == "br":
            renderer.newline()
            stack.append(("tail", element, pre))
            continue
        if tag in _PARAGRAPH:
            renderer.ensure_blank_line()
        elif tag in _BLOCK:
            renderer.ensure_line_break()
        elif tag in _CELL:
            renderer.cell_separator()
        if tag == "li":
            renderer.current.append("- ")

        inner_pre = pre or tag in ("pre", "textarea")
        stack.append(("tail", element, pre))
        stack.append(("close", element, inner_pre))
        renderer.text(element.text, inner_pre)
        for child in reversed(list(element)):
            stack.append(("open", child, inner_pre))


_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]{0,30})\b[^>]{0,2000}?(/?)>")
_VOID = frozenset(
    {
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    }
)
_BLOCK_TAG = re.compile(
    r"</?(?:p|div|br|tr|li|h[1-6]|table|blockquote|pre|ul|ol|hr)\b[^>]{0,2000}>",
    re.IGNORECASE,
)


def html_depth(html: str) -> int:
    """Return the deepest element nesting in *html*, counted from its tags."""
    depth = deepest = 0
    for match in _TAG.finditer(html):
        closing, name, self_closing = match.groups()
        if name.lower() in _VOID or self_closing:
            continue
        if closing:
            depth = max(0, depth - 1)
        else:
            depth += 1
            deepest = max(deepest, depth)
    return deepest


def flat_text(html: str) -> str:
    """Render HTML as text by tags alone, for markup too deep to parse safely."""
    text = _BLOCK_TAG.sub("\n", html)
    text = re.sub(r"<[^>]{0,2000}>", " ", text)
    text = lxml.html.fromstring(f"<pre>{_escape_lt(text)}</pre>").text_content()
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_RUN.sub("\n\n", "\n".join(lines)).strip("\n")


def _escape_lt(text: str) -> str:
    return text.replace("<", "&lt;").replace(">", "&gt;")


def html_to_text(html: str) -> HtmlText:
    """Render HTML as plain text for quote stripping and extraction.

    Block elements and table rows become lines, table cells in one row are
    joined with " | " (or a space after a cell ending in a colon, as in form
    tables), and scripts, styles, hidden elements and images are dropped.
    """
    if not html.strip():
        return HtmlText("", None)
    # lxml.html reads a document that opens with an XML declaration as XHTML
    # and loses its line structure, so the declaration is dropped first.
    html = _XML_DECLARATION.sub("", html, count=1)
    try:
        root = lxml.html.document_fromstring(html)
    except (lxml.etree.ParserError, ValueError):
        return HtmlText(
            _SPACES.sub(" ", re.sub(r"<[^>]{0,2000}>", " ", html)).strip(), None
        )
    renderer = _Renderer()
    body = root.find("body")
    _render(body if body is not None else root, renderer)
    return renderer.finish()


_ALLOWED_TAGS = {
    "a",
    "abbr",
    "b",
    "blockquote",
    "br",
    "caption",
    "code",
    "col",
    "colgroup",
    "dd",
    "del",
    "div",
    "dl",
    "dt",
    "em",
    "font",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "img",
    "ins",
    "li",
    "ol",
    "p",
    "pre",
    "q",
    "s",
    "small",
    "span",
    "strike",
    "strong",
    "sub",
    "sup",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "u",
    "ul",
    "center",
}
_ALLOWED_ATTRIBUTES = {
    "*": {"title", "dir", "lang", "align"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
    "blockquote": {"type", "cite"},
    "font": {"color"},
}


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    # Remote images are tracking beacons in internal tools; only images
    # carried in the message itself (cid: parts) are kept.
    if tag == "img" and attribute == "src":
        return value if value.strip().lower().startswith("cid:") else None
    return value


def sanitize_html(html: str) -> str:
    """Clean HTML by allow-list for display in internal tools.

    Scripts, styles, event handlers, forms, ``javascript:`` URLs and remote
    images are removed; links get ``rel="noopener noreferrer nofollow"``.
    """
    return nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto", "tel", "cid"},
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
        attribute_filter=_filter_attribute,
    )
