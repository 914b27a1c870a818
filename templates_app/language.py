"""The template language marketers write: a small, sandboxed subset of Liquid.

A template parses into three frozen node types (:class:`Text`, :class:`Var`, :class:`If`);
rendering only looks up flat string keys, so nothing a marketer types can reach a Python
object. Anything SES's Handlebars and our renderer could not render byte for byte alike is
refused here, with a reason a marketer understands. No Django imports. This module parses
and checks the limits; templates_app.render renders, templates_app.handlebars compiles for
SES. Why this language: docs/TEMPLATES.md (For contributors).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

# ---------------------------------------------------------------------------
# Errors and AST
# ---------------------------------------------------------------------------


class TemplateSyntaxError(ValueError):
    """A template the marketer wrote cannot be used.

    ``line`` is 1-based and points at the line where the problem starts;
    ``reason`` is a sentence a marketer can act on.
    """

    def __init__(self, line: int, reason: str, *, part: str | None = None) -> None:
        self.line = line
        self.reason = reason
        self.part = part  # "subject", "html" or "text" when known
        super().__init__(f"line {line}: {reason}")


class TemplateLimitError(TemplateSyntaxError):
    """A template that is valid but passes a limit no real email needs to reach (too big,
    too deeply nested, too many tags or links): it would only cost the sender."""


# ---------------------------------------------------------------------------
# Limits (docs/TEMPLATES.md, "Size limits", says why each number)
# ---------------------------------------------------------------------------

#: The parts of an email; each is parsed on its own with its own limits.
PARTS = ("subject", "html", "text")
#: RFC 5322's line length, and the Template model's column.
MAX_SUBJECT_CHARS = 998
#: UTF-8 bytes of the HTML or text body's source: twice the 102 kB after which Gmail
#: clips a message.
MAX_BODY_BYTES = 200 * 1024
#: Nested conditions, where each ``{% elsif %}`` is one more level (it is an ``If`` in the
#: ``orelse`` of the one before, here and in the Handlebars source). It bounds every
#: recursion over nodes (rendering, compiling, hashing, link tracking) to a few frames
#: per level, and keeps pybars3 (the local SES endpoint), which fails near 100, working.
MAX_DEPTH = 32
#: ``{{ }}`` and ``{% %}`` tags in one part: one every 40 bytes of a body at its limit.
MAX_TAGS = 5_000


#: Names (field names) as the AST accepts them.  Names starting with ``_`` are
#: allowed here because the system builds nodes such as ``Var("_t")`` (the
#: tracking token); the *parser* refuses them from marketers.
_NODE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

#: Names that mean something else in Handlebars (keywords, literals, built-in
#: helpers) or that resolve to JavaScript prototype members in older
#: handlebars.js releases.  ``{{log}}`` would call the ``log`` helper instead of
#: reading a field, ``{{this}}`` prints the whole data object, ``{{#if true}}``
#: is always true, and so on: such names could not render identically on SES,
#: so they are not valid field names at all.
RESERVED_NAMES = frozenset(
    {
        # Handlebars keywords and literals
        "this",
        "else",
        "true",
        "false",
        "null",
        "undefined",
        # Handlebars built-in helpers
        "if",
        "unless",
        "each",
        "with",
        "lookup",
        "log",
        "helperMissing",
        "blockHelperMissing",
        # Object.prototype members (looked up as helpers by old handlebars.js)
        "constructor",
        "hasOwnProperty",
        "isPrototypeOf",
        "propertyIsEnumerable",
        "toLocaleString",
        "toString",
        "valueOf",
    }
)


def _check_node_name(name: object) -> None:
    if not isinstance(name, str) or not _NODE_NAME_RE.match(name):
        raise ValueError(f"invalid field name {name!r}")
    if name in RESERVED_NAMES:
        raise ValueError(f"field name {name!r} is reserved")


@dataclass(frozen=True, slots=True)
class Text:
    """Literal template text, emitted verbatim (never escaped)."""

    value: str

    def __post_init__(self) -> None:
        if not isinstance(self.value, str):
            raise TypeError("Text.value must be a str")


@dataclass(frozen=True, slots=True)
class Var:
    """``{{ name }}`` or ``{{ name | default: "fallback" }}``."""

    name: str
    default: str | None = None

    def __post_init__(self) -> None:
        _check_node_name(self.name)
        if self.default is not None and not isinstance(self.default, str):
            raise TypeError("Var.default must be a str or None")


@dataclass(frozen=True, slots=True)
class If:
    """``{% if name %}body{% else %}orelse{% endif %}``.

    ``negate=True`` is ``{% unless %}``; ``{% elsif %}`` is a nested ``If`` as
    the only element of ``orelse``.  ``depth`` is 1 plus the deepest ``If``
    inside; more than :data:`MAX_DEPTH` is refused even for nodes built by
    code, so nothing that walks nodes can run out of stack.
    """

    name: str
    body: tuple[Node, ...]
    orelse: tuple[Node, ...] = ()
    negate: bool = False
    depth: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_node_name(self.name)
        inner = 0
        for attr in ("body", "orelse"):
            value = getattr(self, attr)
            if not isinstance(value, tuple):
                value = tuple(value)
                object.__setattr__(self, attr, value)
            for node in value:
                if isinstance(node, If):
                    inner = max(inner, node.depth)
                elif not isinstance(node, Text | Var):
                    raise TypeError(f"If.{attr} must contain Text, Var or If nodes")
        if not isinstance(self.negate, bool):
            raise TypeError("If.negate must be a bool")
        if inner >= MAX_DEPTH:
            raise ValueError(f"conditions nested more than {MAX_DEPTH} levels deep")
        object.__setattr__(self, "depth", inner + 1)


Node = Text | Var | If


# ---------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------

_TAG_START_RE = re.compile(r"\{[{%]")

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<word>\w+)
  | (?P<string>"(?:[^"\\\n]|\\[^\n])*"|'(?:[^'\\\n]|\\[^\n])*')
  | (?P<badstring>["'])
  | (?P<op>==|!=|<>|<=|>=|\.\.|[^\w\s])
    """,
    re.VERBOSE,
)

_MARKETER_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")

_SUPPORTED_TAGS = "if, elsif, else, endif, unless and endunless"

_TAG_HINTS = {
    "for": "loops are not supported",
    "endfor": "loops are not supported",
    "tablerow": "loops are not supported",
    "cycle": "loops are not supported",
    "break": "loops are not supported",
    "continue": "loops are not supported",
    "case": 'tag "case" is not supported; use {% if %} and {% elsif %}',
    "when": 'tag "when" is not supported; use {% if %} and {% elsif %}',
    "assign": "variables can't be created in email templates",
    "capture": "variables can't be created in email templates",
    "increment": "variables can't be created in email templates",
    "decrement": "variables can't be created in email templates",
    "elseif": "use {% elsif name %}",
    "elif": "use {% elsif name %}",
}

_CONDITION_OPERATORS = {"==", "!=", "<>", "<", ">", "<=", ">=", "contains", "and", "or", "not"}


class _Tok:
    __slots__ = ("kind", "text")

    def __init__(self, kind: str, text: str) -> None:
        self.kind = kind
        self.text = text


def _unquote(literal: str) -> str:
    """Decode a quoted string: ``\\"``, ``\\'`` and ``\\\\`` are escapes; any
    other backslash is kept as is (so ``"C:\\temp"`` means ``C:\\temp``)."""
    body = literal[1:-1]
    if "\\" not in body:
        return body
    out = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body) and body[i + 1] in "\"'\\":
            out.append(body[i + 1])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _tokenize(inner: str, line: int) -> list[_Tok]:
    tokens = []
    pos = 0
    while pos < len(inner):
        m = _TOKEN_RE.match(inner, pos)
        assert m is not None  # the last alternative matches any character
        kind = m.lastgroup
        assert kind is not None
        if kind == "badstring":
            raise TemplateSyntaxError(line, "a quoted text is not closed")
        if kind != "ws":
            tokens.append(_Tok(kind, m.group()))
        pos = m.end()
    return tokens


def _check_marketer_name(tok: _Tok | None, line: int, what: str) -> str:
    if tok is None:
        raise TemplateSyntaxError(line, f"{what} needs a field name, like first_name")
    if tok.kind == "string":
        raise TemplateSyntaxError(line, f"{what} needs a field name, not a quoted text")
    if tok.kind != "word":
        raise TemplateSyntaxError(line, f'{what} needs a field name, found "{tok.text}"')
    name = tok.text
    if name.startswith("_"):
        raise TemplateSyntaxError(line, "names starting with _ are reserved")
    if not _MARKETER_NAME_RE.match(name):
        if name[0].isdigit():
            raise TemplateSyntaxError(line, f'field name "{name}" must start with a letter')
        raise TemplateSyntaxError(
            line,
            f'field name "{name}" may only contain the letters A-Z and a-z, digits and _',
        )
    if name in RESERVED_NAMES:
        raise TemplateSyntaxError(
            line, f'"{name}" is a reserved word and can\'t be used as a field name'
        )
    return name


def _check_after_name(tokens: list[_Tok], i: int, line: int) -> None:
    """Explain the most likely mistake when something follows a field name."""
    if i >= len(tokens):
        return
    tok = tokens[i]
    if tok.text in (".", "[", "]", "(", ")") or tok.text == "..":
        raise TemplateSyntaxError(
            line, "use a plain field name like first_name; dots and attributes are not allowed"
        )


def _parse_output(inner: str, line: int) -> Var:
    if inner.startswith("-") or inner.endswith("-"):
        raise TemplateSyntaxError(line, "whitespace control ({{- and -}}) is not supported")
    if inner[:1] in ("#", "/", ">", "!", "^", "&"):
        raise TemplateSyntaxError(
            line,
            '"{{' + inner[0] + "\" is Handlebars syntax, which email templates don't use; "
            "write {{ name }} for a field and {% if name %} … {% endif %} for conditions",
        )
    tokens = _tokenize(inner, line)
    if not tokens:
        raise TemplateSyntaxError(
            line, "empty {{ }}; put a field name inside, like {{ first_name }}"
        )
    name = _check_marketer_name(tokens[0], line, "{{ }}")
    _check_after_name(tokens, 1, line)
    default: str | None = None
    i = 1
    while i < len(tokens):
        tok = tokens[i]
        if tok.text != "|":
            raise TemplateSyntaxError(line, f'unexpected "{tok.text}" after {name}')
        i += 1
        if i >= len(tokens):
            raise TemplateSyntaxError(
                line, 'a filter name must follow "|"; only default is supported'
            )
        filt = tokens[i]
        if filt.kind != "word":
            raise TemplateSyntaxError(line, f'unexpected "{filt.text}" after "|"')
        if filt.text != "default":
            raise TemplateSyntaxError(line, f'filter "{filt.text}" is not supported (only default)')
        if default is not None:
            raise TemplateSyntaxError(line, "only one default filter is allowed")
        i += 1
        if i >= len(tokens) or tokens[i].text != ":":
            raise TemplateSyntaxError(
                line, 'default needs a fallback text in quotes, like default: "there"'
            )
        i += 1
        if i >= len(tokens) or tokens[i].kind != "string":
            raise TemplateSyntaxError(
                line, 'the fallback after default: must be a text in quotes, like "there"'
            )
        default = _unquote(tokens[i].text)
        _check_fallback(default, line)
        i += 1
    return Var(name, default)


def _check_fallback(default: str, line: int) -> None:
    if "{{" in default:
        raise TemplateSyntaxError(line, 'the fallback text can\'t contain "{{"')
    if default.endswith("{"):
        raise TemplateSyntaxError(line, 'the fallback text can\'t end with "{"')
    if "\x00" in default:
        raise TemplateSyntaxError(line, "the fallback text contains a NUL character")


def _parse_tag(inner: str, line: int) -> tuple[str, str | None]:
    """Return ``(tag, name)`` for a ``{% … %}`` tag."""
    if inner.startswith("-") or inner.endswith("-"):
        raise TemplateSyntaxError(line, "whitespace control ({%- and -%}) is not supported")
    tokens = _tokenize(inner, line)
    if not tokens:
        raise TemplateSyntaxError(line, "empty {% %} tag")
    head = tokens[0]
    if head.kind != "word":
        raise TemplateSyntaxError(line, f'unexpected "{head.text}" at the start of a {{% %}} tag')
    tag = head.text
    if tag in ("if", "elsif", "unless"):
        name = _check_marketer_name(tokens[1] if len(tokens) > 1 else None, line, f"{{% {tag} %}}")
        _check_after_name(tokens, 2, line)
        if len(tokens) > 2:
            extra = tokens[2].text
            if extra in _CONDITION_OPERATORS:
                raise TemplateSyntaxError(
                    line,
                    f'"{extra}" is not supported in conditions; {{% {tag} name %}} only checks '
                    "whether a field has a value",
                )
            raise TemplateSyntaxError(line, f'unexpected "{extra}" in {{% {tag} %}}')
        return tag, name
    if tag in ("else", "endif", "endunless"):
        if len(tokens) > 1:
            if tag == "else" and tokens[1].text == "if":
                raise TemplateSyntaxError(line, "use {% elsif name %} instead of {% else if %}")
            raise TemplateSyntaxError(line, f"{{% {tag} %}} takes nothing else")
        return tag, None
    reason = _TAG_HINTS.get(tag, f'tag "{tag}" is not supported (only {_SUPPORTED_TAGS})')
    raise TemplateSyntaxError(line, reason)


class _Block:
    """An open ``{% if %}`` / ``{% unless %}`` while parsing."""

    __slots__ = ("kind", "line", "clauses", "else_body", "else_line")

    def __init__(self, kind: str, name: str, line: int) -> None:
        self.kind = kind
        self.line = line
        # (name, negate, body)
        self.clauses: list[tuple[str, bool, list[Node]]] = [(name, kind == "unless", [])]
        self.else_body: list[Node] | None = None
        self.else_line = 0

    def current(self) -> list[Node]:
        return self.else_body if self.else_body is not None else self.clauses[-1][2]

    def build(self) -> If:
        orelse: tuple[Node, ...] = tuple(self.else_body or ())
        node: If | None = None
        for name, negate, body in reversed(self.clauses):
            node = If(name, tuple(body), orelse, negate)
            orelse = (node,)
        assert node is not None
        return node


_PART_NAMES = {"subject": "subject", "html": "HTML body", "text": "text body"}

#: What a merge value and the subject's source must not contain: C0 controls (all but
#: TAB), DEL, and what Python's str.splitlines and the email package take for line breaks
#: (NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR). Any of them in a subject either breaks the
#: header or makes Django refuse the whole message.
_CONTROL_CHARS = "".join(map(chr, [*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F, 0x85]))
_CONTROL_CHARS += "\u2028\u2029"
CONTROL_RE = re.compile(f"[{re.escape(_CONTROL_CHARS)}]")
_LINE_BREAKS = "\n\x0b\x0c\r\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines splits at


def _check_source(source: str, part: str) -> None:
    """Refuse a part that can't be sent or passes its size limit (before parsing it)."""
    if source.isascii():
        encoded: str | bytes = source
    else:
        try:
            encoded = source.encode()
        except UnicodeEncodeError as err:  # a lone surrogate: no email, nor the database, holds it
            raise TemplateSyntaxError(
                source.count("\n", 0, err.start) + 1,
                f"the template contains an invalid character (U+{ord(source[err.start]):04X}); "
                "retype the text around it",
            ) from None
    if part == "subject":
        if len(source) > MAX_SUBJECT_CHARS:
            raise TemplateLimitError(
                1,
                f"the subject is {len(source):,} characters long; at most {MAX_SUBJECT_CHARS} "
                "are allowed (inboxes show about the first 60)",
            )
        control = CONTROL_RE.search(source)
        if control is not None:
            char = control.group()
            if char in _LINE_BREAKS:
                raise TemplateSyntaxError(1, "the subject must be one line; remove the line break")
            raise TemplateSyntaxError(
                1,
                f"the subject contains an invisible control character (U+{ord(char):04X}); "
                "remove it",
            )
    elif len(encoded) > MAX_BODY_BYTES:
        newline = "\n" if isinstance(encoded, str) else b"\n"
        raise TemplateLimitError(
            encoded.count(newline, 0, MAX_BODY_BYTES) + 1,  # type: ignore[arg-type]
            f"the {_PART_NAMES[part]} is {math.ceil(len(encoded) / 1024):,} kB: it passes the "
            f"{MAX_BODY_BYTES // 1024} kB limit on this line (Gmail cuts messages off after "
            "102 kB); shorten it, for example by linking to a web page for the rest",
        )


def _check_depth(depth: int, line: int) -> None:
    if depth > MAX_DEPTH:
        raise TemplateLimitError(
            line,
            f"conditions are nested more than {MAX_DEPTH} levels deep here (each {{% elsif %}} "
            "counts as a level too); close some of them first, or use separate {% if %} blocks",
        )


def parse(source: str, *, part: str = "html") -> tuple[Node, ...]:
    """Parse one part (``"subject"``, ``"html"`` or ``"text"``) of a marketer's template into
    nodes; raises :class:`TemplateSyntaxError` (:class:`TemplateLimitError` past a limit).

    Linear in the size of ``source`` and without recursion, whatever it holds.
    """
    if not isinstance(source, str):
        raise TypeError("template source must be a str")
    if part not in PARTS:
        raise ValueError(f"unknown template part {part!r}")
    try:
        _check_source(source, part)
        return _parse(source)
    except TemplateSyntaxError as err:
        err.part = part
        raise


def _parse(source: str) -> tuple[Node, ...]:
    root: list[Node] = []
    stack: list[_Block] = []
    depth = 0  # nesting of the node being built: the clauses of every open block
    tags = 0
    pos = 0
    line = 1
    n = len(source)

    def out() -> list[Node]:
        return stack[-1].current() if stack else root

    def add_text(start: int, end: int, line: int) -> None:
        if start >= end:
            return
        text = source[start:end]
        nul = text.find("\x00")
        if nul >= 0:
            raise TemplateSyntaxError(
                line + text.count("\n", 0, nul), "the template contains a NUL character"
            )
        out().append(Text(text))

    while pos < n:
        m = _TAG_START_RE.search(source, pos)
        if m is None:
            add_text(pos, n, line)
            break
        start = m.start()
        add_text(pos, start, line)
        line += source.count("\n", pos, start)
        tag_line = line
        tags += 1
        if tags > MAX_TAGS:
            raise TemplateLimitError(
                tag_line,
                f"more than {MAX_TAGS:,} tags ({{{{ }}}} and {{% %}}) in one part; an email "
                "needs far fewer: show prepared fields instead of building text from many tags",
            )
        is_output = m.group() == "{{"
        closer = "}}" if is_output else "%}"
        body_start = m.end()
        if is_output and body_start < n and source[body_start] in "{%":
            if source[body_start] == "{":
                raise TemplateSyntaxError(
                    tag_line,
                    'triple braces "{{{" are not supported; write {{ name }} '
                    "(values are escaped for HTML automatically)",
                )
            raise TemplateSyntaxError(
                tag_line, 'a "{" right before a {% tag is not allowed; put a space between them'
            )
        # Find the closer, skipping over quoted strings.
        i = body_start
        end = -1
        while i < n:
            ch = source[i]
            if ch == "\n":
                line += 1
            elif ch in "\"'":
                j = i + 1
                while j < n and source[j] != ch and source[j] != "\n":
                    j += 2 if source[j] == "\\" and source[j + 1 : j + 2] not in ("", "\n") else 1
                if j >= n or source[j] != ch:
                    opener = "{{" if is_output else "{%"
                    raise TemplateSyntaxError(
                        tag_line,
                        f'"{opener}" is not closed with "{closer}", '
                        "or a quoted text inside it is not closed",
                    )
                i = j
            elif source.startswith(closer, i):
                end = i
                break
            elif ch == "{" and source[i + 1 : i + 2] in ("{", "%"):
                break
            i += 1
        if end < 0:
            opener = "{{" if is_output else "{%"
            raise TemplateSyntaxError(tag_line, f'"{opener}" is not closed with "{closer}"')
        inner = source[body_start:end].strip()
        pos = end + 2
        if is_output:
            out().append(_parse_output(inner, tag_line))
            continue
        tag, name = _parse_tag(inner, tag_line)
        if tag in ("if", "unless"):
            assert name is not None
            depth += 1
            _check_depth(depth, tag_line)
            stack.append(_Block(tag, name, tag_line))
        elif tag == "elsif":
            assert name is not None
            if not stack:
                raise TemplateSyntaxError(tag_line, "{% elsif %} without a matching {% if %}")
            block = stack[-1]
            if block.else_body is not None:
                raise TemplateSyntaxError(
                    tag_line, f"{{% elsif %}} after {{% else %}} (line {block.else_line})"
                )
            depth += 1
            _check_depth(depth, tag_line)
            block.clauses.append((name, False, []))
        elif tag == "else":
            if not stack:
                raise TemplateSyntaxError(tag_line, "{% else %} without a matching {% if %}")
            block = stack[-1]
            if block.else_body is not None:
                raise TemplateSyntaxError(
                    tag_line,
                    f"{{% else %}} appears twice in the same {{% {block.kind} %}} "
                    f"(first on line {block.else_line})",
                )
            block.else_body = []
            block.else_line = tag_line
        else:  # endif / endunless
            kind = tag[3:]
            if not stack:
                raise TemplateSyntaxError(
                    tag_line, f"{{% {tag} %}} without a matching {{% {kind} %}}"
                )
            block = stack.pop()
            depth -= len(block.clauses)
            if block.kind != kind:
                raise TemplateSyntaxError(
                    tag_line,
                    f"{{% {tag} %}} does not match {{% {block.kind} %}} from line {block.line}; "
                    f"close it with {{% end{block.kind} %}}",
                )
            out().append(block.build())
    if stack:
        block = stack[-1]
        raise TemplateSyntaxError(
            block.line, f"{{% {block.kind} %}} is never closed; add {{% end{block.kind} %}}"
        )
    return tuple(root)
