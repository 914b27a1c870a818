"""Compiling the language's nodes to an SES stored template (Handlebars) that handlebars.js,
pybars3 and templates_app.render turn into the same bytes."""

from __future__ import annotations

import re
from collections.abc import Iterable

from templates_app.language import Node, Text, Var
from templates_app.render import escape_html

# ---------------------------------------------------------------------------
# Handlebars (SES) compiler
# ---------------------------------------------------------------------------
#
# The compiled source is built as a list of pieces, then made engine-neutral:
#
# 1. Standalone lines.  handlebars.js (and pybars3, with different rules)
#    delete a line that holds nothing but block tags ({{#if}}, {{else}},
#    {{/if}}) and whitespace.  We never want that (Text is verbatim), so any
#    block tag that *could* be standalone gets an empty comment "{{!}}" next
#    to it, inside the block.  A comment is not text, so no engine considers
#    the line standalone any more, and the comment itself is never
#    standalone because its neighbour is a tag.
# 2. "}" right after a tag would lex as "}}}" (a parse error in handlebars.js
#    after {{x}}, {{#if}}, {{/if}} and even {{{x}}}): a "{{!}}" goes between.
# 3. "~}}" in text: pybars3 applies whitespace control ("~}}") to the raw
#    source, even in text; "~{{!}}}}" renders "~}}" everywhere.
# 4. A backslash right before a tag: handlebars.js reads "\{{" as an escaped
#    (literal) mustache, pybars3 does not know that escape at all.  We emit
#    "\ {{~tag}}": the space stops the escape, and the "~" strips exactly
#    that space again, in both engines.
# 5. "{" right before a tag can't be expressed ("{{{" is a triple-stash in
#    every engine): the parser refuses it; to_handlebars raises ValueError
#    for hand-built nodes.
# 6. pybars3 tokenises the start of each text as runs of [ \t] and "\r?\n"
#    and keeps only the "\n" of a "\r\n" there.  Such a CRLF is split as
#    "\r{{!}}{{!}}\n" (two comments: a lone comment between two blank texts
#    could itself be "standalone" in handlebars.js and eat the newline).
#
# Names that pybars3 would lex as a literal in a block parameter (true…,
# false…, null…, undefined…: "{{#if nullable}}" is a pybars parse error) are
# written as a bracketed segment "[nullable]", which means the same in all
# engines.  {{#unless}} is only used without {{else}} (pybars3 ignores the
# else branch of unless); unless-with-else compiles to {{#if}} with the
# branches swapped.

_T, _VAR, _OPEN, _ELSE, _CLOSE, _COMMENT = range(6)
_GUARD = (_COMMENT, "!")
_BLOCK_KINDS = (_OPEN, _ELSE, _CLOSE)
_PYBARS_LITERAL_PREFIX = re.compile(r"(?:true|false|null|undefined)")


def _hbs_param(name: str) -> str:
    return f"[{name}]" if _PYBARS_LITERAL_PREFIX.match(name) else name


def _hbs_pieces(nodes: Iterable[Node], html: bool, out: list[tuple[int, str]]) -> None:
    for node in nodes:
        if isinstance(node, Text):
            out.append((_T, node.value))
        elif isinstance(node, Var):
            expr = (_VAR, node.name) if html else (_VAR, "{" + node.name + "}")
            if node.default:
                fallback = escape_html(node.default) if html else node.default
                out.append((_OPEN, f"#if {_hbs_param(node.name)}"))
                out.append(expr)
                out.append((_ELSE, "else"))
                out.append((_T, fallback))
                out.append((_CLOSE, "/if"))
            else:
                out.append(expr)
        else:
            param = _hbs_param(node.name)
            if node.negate and not node.orelse:
                out.append((_OPEN, f"#unless {param}"))
                _hbs_pieces(node.body, html, out)
                out.append((_CLOSE, "/unless"))
                continue
            first, second = (node.orelse, node.body) if node.negate else (node.body, node.orelse)
            out.append((_OPEN, f"#if {param}"))
            _hbs_pieces(first, html, out)
            if second:
                out.append((_ELSE, "else"))
                _hbs_pieces(second, html, out)
            out.append((_CLOSE, "/if"))


#: Whitespace as Python's isspace() (what re's \s matches too) plus U+FEFF, which
#: JavaScript's \s has and Python's lacks.
_BLANK = re.compile(r"[\s\ufeff]*").fullmatch


def _blank_after(piece: tuple[int, str], blank_before: bool) -> bool:
    """Whether only blank text and block tags lie between the start of the line and the end
    of ``piece``, given whether they do up to the start of ``piece``."""
    kind, value = piece
    if kind == _T:
        newline = value.rfind("\n")
        if newline >= 0:
            return _BLANK(value, newline + 1) is not None
        return blank_before and _BLANK(value) is not None
    return blank_before and kind in _BLOCK_KINDS


def _blank_before(piece: tuple[int, str], blank_after: bool) -> bool:
    """Mirror of :func:`_blank_after`: from the start of ``piece`` to the end of the line."""
    kind, value = piece
    if kind == _T:
        newline = value.find("\n")
        if newline >= 0:
            return _BLANK(value, 0, newline) is not None
        return blank_after and _BLANK(value) is not None
    return blank_after and kind in _BLOCK_KINDS


def _guard_standalone(pieces: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Step 1: a "{{!}}" next to each block tag that only blank text and other block tags
    separate from both ends of its line (the tag could be "standalone" in some engine).
    One pass each way, so linear however many tags share a line."""
    blank_right = [True] * len(pieces)  # [i]: from after pieces[i] to the end of its line
    for i in range(len(pieces) - 1, 0, -1):
        blank_right[i - 1] = _blank_before(pieces[i], blank_right[i])
    guarded: list[tuple[int, str]] = []
    blank_left = True  # from the start of the line to the end of `guarded`
    for i, piece in enumerate(pieces):
        kind = piece[0]
        at_risk = kind in _BLOCK_KINDS and blank_left and blank_right[i]
        if at_risk and kind == _CLOSE:
            guarded.append(_GUARD)
            blank_left = False
        guarded.append(piece)
        blank_left = _blank_after(piece, blank_left)
        if at_risk and kind != _CLOSE:
            guarded.append(_GUARD)
            blank_left = False
    return guarded


_PYBARS_LEADING_SPACE = re.compile(r"(?:[ \t]+|\r?\n)*")


def _split_leading_crlf(value: str) -> list[str]:
    """Split ``value`` between "\r" and "\n" of each CRLF in its leading blank run."""
    run = _PYBARS_LEADING_SPACE.match(value).end()  # type: ignore[union-attr]
    chunks = []
    start = 0
    i = value.find("\r\n", 0, run)
    while i >= 0:
        chunks.append(value[start : i + 1])
        start = i + 1
        i = value.find("\r\n", start, run)
    chunks.append(value[start:])
    return chunks


def to_handlebars(nodes: Iterable[Node], *, html: bool) -> str:
    """Compile nodes to Handlebars source for an SES stored template.

    ``html=True``: outputs are ``{{name}}`` (SES escapes); ``html=False``
    (subject and text part): ``{{{name}}}`` (no escaping).  Rendering the
    result with the same data gives exactly :func:`render`'s output.
    Raises :class:`ValueError` for (hand-built) nodes that cannot be
    expressed identically in Handlebars.
    """
    raw: list[tuple[int, str]] = []
    _hbs_pieces(nodes, bool(html), raw)

    # Merge adjacent text (joined once: linear however many), drop empty text, validate.
    pieces: list[tuple[int, str]] = []
    texts: list[str] = []
    for kind, value in raw:
        if kind == _T:
            texts.append(value)
            continue
        if texts:
            text = "".join(texts)
            if text:
                pieces.append((_T, text))
            texts.clear()
        pieces.append((kind, value))
    text = "".join(texts)
    if text:
        pieces.append((_T, text))
    for i, (kind, value) in enumerate(pieces):
        if kind != _T:
            continue
        if "{{" in value:
            raise ValueError('text contains "{{", which Handlebars would read as a tag')
        if "\x00" in value:
            raise ValueError("text contains a NUL character, which Handlebars refuses")
        if value.endswith("{") and i + 1 < len(pieces):
            raise ValueError('text ends with "{" right before a tag; Handlebars would read "{{{"')

    guarded = _guard_standalone(pieces)

    # 2 + 3. "}" after a tag, "~}}" in text.
    final: list[tuple[int, str]] = []
    for kind, value in guarded:
        if kind != _T:
            final.append((kind, value))
            continue
        if value.startswith("}") and final and final[-1][0] != _COMMENT:
            final.append(_GUARD)
        chunks = value.split("~}}")
        for k, chunk in enumerate(chunks):
            if k:
                final.append(_GUARD)
                chunk = "}}" + chunk
            if k < len(chunks) - 1:
                chunk += "~"
            final.append((_T, chunk))

    # 6. pybars3 drops the "\r" of a "\r\n" in the leading [ \t\r\n] run of a text.
    crlf_safe: list[tuple[int, str]] = []
    for kind, value in final:
        if kind == _T:
            for k, chunk in enumerate(_split_leading_crlf(value)):
                if k:
                    crlf_safe.extend((_GUARD, _GUARD))
                crlf_safe.append((_T, chunk))
        else:
            crlf_safe.append((kind, value))
    final = crlf_safe

    # 4. Serialise; "\ {{~" after a trailing backslash.
    parts: list[str] = []
    strip_next = False
    for i, (kind, value) in enumerate(final):
        if kind == _T:
            if value.endswith("\\") and i + 1 < len(final):
                parts.append(value + " ")
                strip_next = True
            else:
                parts.append(value)
            continue
        parts.append("{{~" if strip_next else "{{")
        strip_next = False
        parts.append(value)
        parts.append("}}")
    return "".join(parts)
