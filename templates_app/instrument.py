"""Click and open tracking, done on the parsed template.

:func:`instrument_links` rewrites the static links of the HTML part and the
http(s) URLs of the text part to go through the click tracker (one index per
destination, shared by both parts) and adds the open pixel to the HTML.  It works on the AST from
:mod:`templates_app.language`, so the result renders locally and compiles to
the SES template exactly like any other template (the tracking token is just
the reserved field ``_t``).  No Django imports.
"""

from __future__ import annotations

import bisect
import html
import re
from collections.abc import Iterable
from html.entities import html5 as _HTML5_ENTITIES

from templates_app.language import If, Node, TemplateLimitError, Text, Var

__all__ = ["MAX_TRACKED_LINKS", "instrument_html", "instrument_links"]

#: Distinct tracked destinations in one template: a long newsletter has about a hundred;
#: each is a row of the campaign's click report.
MAX_TRACKED_LINKS = 500

# In the "masked" text of a sequence of sibling nodes, every Var becomes _VAR and
# every If becomes _IF (one character each), so offsets map back to Text nodes.
_VAR = "\x00"
_IF = "\x01"
_MASK = str.maketrans({_VAR: "\ufffd", _IF: "\ufffd"})

_A_START = re.compile(r"<a(?=[\s/>])", re.IGNORECASE)
_SPACE_OR_SLASH = re.compile(r"[\s/]*")
_ATTR_NAME = re.compile(r"[^\s/>][^\s/>=]*")
_EQUALS = re.compile(r"\s*=\s*")
_UNQUOTED = re.compile(r"[^\s>]*")
_BODY_END = re.compile(r"</body(?=[\s/>])", re.IGNORECASE)
_HTTP = re.compile(r"https?://", re.IGNORECASE)
# A URL in plain text: http(s):// after a start of text or a character that cannot be part of
# a word or a scheme, then anything but space, quotes, angle brackets and backticks (which
# delimit URLs in text: "<https://…>", `https://…`) or a masked field or condition.
_TEXT_URL = re.compile(r"(?<![\w.+-])https?://[^\s<>\"`\x00\x01]+", re.IGNORECASE | re.ASCII)
# What ends a sentence rather than a URL: left off the URL's end (as GitHub's autolinks do).
_TRAILING = ".,;:!?'*_~"
_CLOSING = {")": "(", "]": "[", "}": "{"}
_OPENING = {opening: closing for closing, opening in _CLOSING.items()}
_CHARREF = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)")


def _decode_attribute(value: str) -> str:
    """Decode character references the way a browser does *in an attribute*.

    Like :func:`html.unescape`, except for the HTML "historical" rule: a named
    reference without ``;`` followed by ``=`` or an alphanumeric is left
    alone, so ``?a=1&reg=us`` stays ``&reg=us`` (``html.unescape`` would make
    it ``®=us`` and break the link).
    """
    if "&" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        ref = match.group(1)
        if ref[0] == "#":
            return html.unescape(match.group(0))
        if ref in _HTML5_ENTITIES:
            return _HTML5_ENTITIES[ref]
        for end in range(len(ref) - 1, 1, -1):
            prefix = ref[:end]
            if prefix in _HTML5_ENTITIES:
                rest = ref[end:]
                if rest[0] == "=" or rest[0].isalnum():
                    return match.group(0)
                return _HTML5_ENTITIES[prefix] + rest
        return match.group(0)

    return _CHARREF.sub(replace, value)


def _parse_start_tag(text: str, pos: int):
    """Parse the attributes of a start tag beginning at ``pos`` (after ``<a``).

    Returns ``(end, attrs)`` where ``end`` is the index after ``>`` and attrs
    is a list of ``(name, value_start, value_end, quoted)``; ``None`` if the
    tag is not closed in ``text``.  Follows the HTML tokenizer's attribute
    states closely enough for real-world email HTML.
    """
    attrs = []
    n = len(text)
    while True:
        pos = _SPACE_OR_SLASH.match(text, pos).end()
        if pos >= n:
            return None
        if text[pos] == ">":
            return pos + 1, attrs
        name_match = _ATTR_NAME.match(text, pos)
        name = name_match.group().lower()
        pos = name_match.end()
        eq = _EQUALS.match(text, pos)
        if eq is None:
            attrs.append((name, pos, pos, True))
            continue
        pos = eq.end()
        if pos >= n:
            return None
        quote = text[pos]
        if quote in "\"'":
            close = text.find(quote, pos + 1)
            if close < 0:
                return None
            attrs.append((name, pos + 1, close, True))
            pos = close + 1
        else:
            end = _UNQUOTED.match(text, pos).end()
            attrs.append((name, pos, end, False))
            pos = end


class _Context:
    def __init__(self, base_url: str, token_var: str) -> None:
        self.base_url = base_url
        # The click URL's start, as the part being instrumented writes it (escaped in HTML).
        self.prefix = html.escape(base_url, quote=True) + "/t/c/"
        # Our own tracking URLs (clicks, pixel, unsubscribe page) are never wrapped again.
        self.own = base_url.lower() + "/t/"
        self.token_var = token_var
        self.part = "html"
        self.index: dict[str, int] = {}
        self.urls: list[str] = []
        # Line of the text being instrumented (texts are visited in document order); tags
        # that span lines are not counted, so it is a close guess for error messages.
        self.line = 1

    def link_index(self, url: str, line: int) -> int:
        index = self.index.get(url)
        if index is None:
            if len(self.urls) == MAX_TRACKED_LINKS:
                raise TemplateLimitError(
                    line,
                    f"more than {MAX_TRACKED_LINKS} different tracked links; mark the ones "
                    "that need no click count with data-notrack, or link to a web page that "
                    "lists them",
                    part=self.part,
                )
            index = self.index[url] = len(self.urls)
            self.urls.append(url)
        return index

    def start_text_part(self) -> None:
        """Go on with the text part: through the same index, with its own lines."""
        self.part, self.line = "text", 1
        self.prefix = self.base_url + "/t/c/"


def _masked(nodes: tuple[Node, ...]) -> tuple[str, list[int], list[int]]:
    """The masked text of sibling ``nodes``, the flat offset of each Text node, and their
    indexes among ``nodes``."""
    pieces = []
    starts = []  # flat offset of each Text node
    text_indexes = []
    offset = 0
    for i, node in enumerate(nodes):
        if isinstance(node, Text):
            starts.append(offset)
            text_indexes.append(i)
            piece = node.value.translate(_MASK)
        else:
            piece = _VAR if isinstance(node, Var) else _IF
        pieces.append(piece)
        offset += len(piece)
    return "".join(pieces), starts, text_indexes


def _find_links(
    nodes: tuple[Node, ...], ctx: _Context
) -> dict[int, list[tuple[int, int, bool, str]]]:
    """Trackable hrefs among sibling ``nodes``: node index → [(start, end, quoted, url)]."""
    flat, starts, text_indexes = _masked(nodes)
    found: dict[int, list[tuple[int, int, bool, str]]] = {}
    pos = 0
    while True:
        match = _A_START.search(flat, pos)
        if match is None:
            break
        parsed = _parse_start_tag(flat, match.end())
        if parsed is None:
            # Not closed before the end: a browser reads all the rest as this tag's attributes
            # and then drops it, so there is no further link. Trying the next "<a" instead
            # would scan to the end for each one: quadratic (docs/TEMPLATES.md, Linear work).
            break
        end, attrs = parsed
        pos = end
        tag = flat[match.start() : end]
        if _IF in tag:
            continue  # attributes depend on a condition: leave the link alone
        names = [attr[0] for attr in attrs]
        if "data-notrack" in names or "href" not in names:
            continue
        _, vstart, vend, quoted = attrs[names.index("href")]  # browsers use the first href
        raw = flat[vstart:vend]
        if _VAR in raw:
            continue  # template tags inside the href: not a static URL
        url = _decode_attribute(raw).strip()
        if not _HTTP.match(url) or url.lower().startswith(ctx.own):
            continue  # mailto:, tel:, #anchors, relative links, javascript:, ours already, …
        k = bisect.bisect_right(starts, vstart) - 1
        base = starts[k]
        found.setdefault(text_indexes[k], []).append((vstart - base, vend - base, quoted, url))
    return found


def _url_end(flat: str, start: int, end: int) -> int:
    """Where the URL matched at flat[start:end] really ends: trailing sentence punctuation,
    and closing brackets it did not open, are left off (``(see https://x.example/a_(b)).``
    keeps ``https://x.example/a_(b)``). Linear: the brackets are counted once."""
    opened = dict.fromkeys(_CLOSING, 0)
    for char in flat[start:end]:
        if char in _CLOSING:
            opened[char] -= 1
        elif char in _OPENING:
            opened[_OPENING[char]] += 1
    while end > start:
        char = flat[end - 1]
        if char in _TRAILING:
            end -= 1
        elif char in _CLOSING and opened[char] < 0:
            opened[char] += 1
            end -= 1
        else:
            break
    return end


def _find_text_urls(
    nodes: tuple[Node, ...], ctx: _Context
) -> dict[int, list[tuple[int, int, bool, str]]]:
    """Trackable URLs of plain text among sibling ``nodes``: node index → [(start, end,
    True, url)]. A URL that runs into a field or a condition (``https://x.example/?e={{ email
    }}``) is not a fixed address: left alone, as in an href."""
    flat, starts, text_indexes = _masked(nodes)
    found: dict[int, list[tuple[int, int, bool, str]]] = {}
    for match in _TEXT_URL.finditer(flat):
        if match.end() < len(flat) and flat[match.end()] in (_VAR, _IF):
            continue
        start, end = match.start(), _url_end(flat, match.start(), match.end())
        url = flat[start:end]
        if _TEXT_URL.fullmatch(url) is None or url.lower().startswith(ctx.own):
            continue  # nothing after the scheme but punctuation; or ours already
        k = bisect.bisect_right(starts, start) - 1
        base = starts[k]
        found.setdefault(text_indexes[k], []).append((start - base, end - base, True, url))
    return found


def _instrument(nodes: tuple[Node, ...], ctx: _Context) -> list[Node]:
    """Recurses once per nesting level: If.depth bounds it (language.MAX_DEPTH)."""
    links = (_find_text_urls if ctx.part == "text" else _find_links)(nodes, ctx)
    out: list[Node] = []
    for i, node in enumerate(nodes):
        if isinstance(node, If):
            out.append(
                If(
                    node.name,
                    tuple(_instrument(node.body, ctx)),
                    tuple(_instrument(node.orelse, ctx)),
                    node.negate,
                )
            )
            continue
        if not isinstance(node, Text):
            out.append(node)
            continue
        value = node.value
        spans = links.get(i)
        if not spans:
            out.append(node)
            ctx.line += value.count("\n")
            continue
        last = 0
        for start, end, quoted, url in spans:
            ctx.line += value.count("\n", last, start)
            index = ctx.link_index(url, ctx.line)
            quote = "" if quoted else '"'
            out.append(Text(value[last:start] + quote + ctx.prefix))
            out.append(Var(ctx.token_var))
            out.append(Text(f"/{index}{quote}"))
            last = end
        ctx.line += value.count("\n", last)
        out.append(Text(value[last:]))
    return _merge(out)


def _trailer(base_url: str, token_var: str, honeypot_index: int) -> list[Node]:
    """The open pixel, then the honeypot link: an empty, hidden anchor (no text, not
    displayed, out of the tab order, hidden from screen readers), so no person can follow
    it, while link scanners, which follow every href, do. Its index is one past the last
    real link, so it looks like any other tracked link."""
    base = html.escape(base_url, quote=True)
    return [
        Text(f'<img src="{base}/t/o/'),
        Var(token_var),
        Text(f'.gif" width="1" height="1" alt="" style="display:none"><a href="{base}/t/c/'),
        Var(token_var),
        Text(f'/{honeypot_index}" style="display:none" aria-hidden="true" tabindex="-1"></a>'),
    ]


def _pixel(nodes: list[Node], trailer: list[Node]) -> list[Node]:
    """Insert `trailer` before the last top-level </body>, or at the end."""
    for i in range(len(nodes) - 1, -1, -1):
        node = nodes[i]
        if not isinstance(node, Text):
            continue
        matches = list(_BODY_END.finditer(node.value))
        if not matches:
            continue
        cut = matches[-1].start()
        head, tail = node.value[:cut], node.value[cut:]
        return _merge([*nodes[:i], Text(head), *trailer, Text(tail), *nodes[i + 1 :]])
    return _merge([*nodes, *trailer])


def _merge(nodes: list[Node]) -> list[Node]:
    """Adjacent Text nodes joined (once: linear however many), empty ones dropped."""
    merged: list[Node] = []
    texts: list[str] = []
    for node in nodes:
        if isinstance(node, Text):
            texts.append(node.value)
            continue
        if text := "".join(texts):
            merged.append(Text(text))
        texts.clear()
        merged.append(node)
    if text := "".join(texts):
        merged.append(Text(text))
    return merged


def instrument_links(
    *,
    html: Iterable[Node],
    text: Iterable[Node],
    base_url: str,
    token_var: str = "_t",  # noqa: S107 (a field name, not a secret)
) -> tuple[tuple[Node, ...], tuple[Node, ...], list[str]]:
    """Add click tracking to both bodies and open tracking to the HTML: (html, text, urls).

    The one function every path compiles through (templates_app.services.template_compile:
    the sends, previews and test sends). The HTML part is tracked as :func:`instrument_html`
    says, then the text part, through the same index: a destination in both parts is one
    tracked link, counted once in the report whichever part was clicked.

    * In the text part every ``http://`` or ``https://`` URL written in the template is
      rewritten to ``{base_url}/t/c/{{_t}}/{index}``. Its end is where a reader would see it:
      space, ``"``, ``<``, ``>`` or a backtick end it, and trailing ``. , ; : ! ? ' * _ ~``
      and closing brackets it did not open are left after it (``(see https://x.example/a).``).
    * Left alone there: a URL that runs into a field or a condition
      (``https://x.example/?e={{ email }}``), a field holding a URL (``{{ url }}``: the value
      is the contact's, not a link of the template), and our own tracking URLs (nothing is
      wrapped twice; the unsubscribe link is the ``{{ unsubscribe_url }}`` field).
    * The text part gets no pixel and no honeypot link: it has no images, and a person sees
      every URL in it. The honeypot's index is one past every link of both parts.
    """
    base_url = base_url.rstrip("/")
    ctx = _Context(base_url, token_var)
    instrumented_html = _instrument(tuple(html), ctx)
    ctx.start_text_part()
    instrumented_text = _instrument(tuple(text), ctx)
    trailer = _trailer(base_url, token_var, honeypot_index=len(ctx.urls))
    return tuple(_pixel(instrumented_html, trailer)), tuple(instrumented_text), ctx.urls


def instrument_html(
    nodes: Iterable[Node],
    *,
    base_url: str,
    token_var: str = "_t",  # noqa: S107 (a field name, not a secret)
) -> tuple[tuple[Node, ...], list[str]]:
    """Add click and open tracking to a parsed HTML template (alone: instrument_links does
    both parts).

    * Every ``<a>`` whose ``href`` is a static ``http(s)://`` URL (no template
      tags in it) gets ``href="{base_url}/t/c/{{_t}}/{index}"``.  ``index`` is
      0-based per distinct URL, in order of first appearance; the returned list
      holds the original URLs (character references decoded) by index.
    * Left alone: ``mailto:``, ``tel:``, ``#anchors``, relative URLs, hrefs
      with template tags, ``<a data-notrack …>``, and ``<a>`` tags whose
      attributes are inside an ``{% if %}``.
    * The open pixel ``<img src="{base_url}/t/o/{{_t}}.gif" …>`` goes right
      before the last ``</body>`` of a top-level text, or at the end, followed by the
      honeypot link ``<a href="{base_url}/t/c/{{_t}}/{len(urls)}" …></a>``: invisible,
      so only software follows it (see tracking.hits.classify). It is not in the returned list.
    """
    html, _, urls = instrument_links(html=nodes, text=(), base_url=base_url, token_var=token_var)
    return html, urls
