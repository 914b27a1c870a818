"""Rendering the language's nodes locally: the values both renderers see, and the renderer
of previews, tests and the rendered send path (byte-identical to SES's, see language.py)."""

from __future__ import annotations

import datetime
import decimal
import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping

from templates_app.language import CONTROL_RE, If, Node, Text, Var

# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------


def merge_value(value: object) -> str:
    """Normalise a contact attribute to the string both renderers see.

    Templates only ever see strings, so what a field "is" must be decided
    once, here, for the local renderer and SES alike:

    * ``None`` and ``False`` → ``""`` (so they are false in ``{% if %}``)
    * ``True`` → ``"true"``
    * ``int`` → decimal digits (``42``)
    * ``float`` → shortest round-trip form; integral values without a
      fraction (``3.0`` → ``"3"``, ``0.1`` → ``"0.1"``, ``1e+20`` → ``"1e+20"``);
      NaN and infinities → ``""``
    * ``Decimal`` → ``str()``; ``date`` / ``datetime`` → ISO 8601
    * ``str`` → unchanged, except that line breaks and other control characters
      (C0 but TAB, DEL, NEL, U+2028, U+2029) become one space each: the same value
      fills the subject on both send paths (SES renders the bulk path's), and there
      a line break would start a new header or make the whole message refused
    * anything else (lists, dicts, objects) → ``""``: not supported
    """
    if value is None or value is False:
        return ""
    if value is True:
        return "true"
    if isinstance(value, str):
        value = str.__str__(value)
        # isprintable() is a C loop that is true for almost every name and address, so
        # the usual value costs one call; the regex only runs on values with a TAB, a
        # non-ASCII space, a format character or a control.
        if value.isprintable():
            return value
        return CONTROL_RE.sub(" ", value)
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return float.__repr__(value)
    if isinstance(value, decimal.Decimal):
        return str(value) if value.is_finite() else ""
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return ""


def merge_data(nodes: Iterable[Node], values: Mapping[str, object]) -> dict[str, str]:
    """The merge data for ``nodes``: every field the template uses, as a string.

    Missing fields become ``""``.  Always send SES *all* field names (this
    function does): the lookup then finds an own property in every Handlebars
    implementation, never an inherited one.
    """
    return {name: merge_value(values.get(name)) for name in sorted(field_names(nodes))}


def field_names(nodes: Iterable[Node]) -> set[str]:
    """All field names used by ``nodes`` (outputs and conditions)."""
    names: set[str] = set()
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if isinstance(node, Var):
            names.add(node.name)
        elif isinstance(node, If):
            names.add(node.name)
            stack.extend(node.body)
            stack.extend(node.orelse)
    return names


def fields_without_default(nodes: Iterable[Node]) -> set[str]:
    """The fields ``nodes`` output with no ``default`` where nothing guards them: a contact
    without a value for one gets an empty gap in the message. A ``{{ x }}`` inside
    ``{% if x %}`` (or an ``{% unless x %}``'s else) only shows when x has a value, so it is
    not one of them."""
    names: set[str] = set()
    stack: list[tuple[Node, frozenset[str]]] = [(node, frozenset()) for node in nodes]
    while stack:
        node, guarded = stack.pop()
        if isinstance(node, Var):
            if node.default is None and node.name not in guarded:
                names.add(node.name)
        elif isinstance(node, If):
            present = guarded | {node.name}
            stack.extend((child, guarded if node.negate else present) for child in node.body)
            stack.extend((child, present if node.negate else guarded) for child in node.orelse)
    return names


# ---------------------------------------------------------------------------
# Local renderer
# ---------------------------------------------------------------------------

#: handlebars.js ``escapeExpression`` table (pybars3 lacks the ``=`` entry).
_HTML_ESCAPES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    '"': "&quot;",
    "'": "&#x27;",
    "`": "&#x60;",
    "=": "&#x3D;",
}
_ESCAPE_TABLE = str.maketrans(_HTML_ESCAPES)
_NEEDS_ESCAPE = re.compile(r"[&<>\"'`=]").search


def escape_html(value: str) -> str:
    """Escape exactly like handlebars.js ``{{ }}`` (and thus SES) does."""
    if _NEEDS_ESCAPE(value) is None:
        return value
    return value.translate(_ESCAPE_TABLE)


def _lookup(data: Mapping[str, str], name: str) -> str:
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(
            f"merge data for {name!r} is {type(value).__name__}, not str; "
            "convert values with merge_value()"
        )
    return value


_Op = Callable[[Mapping[str, str]], str]


def _compile(nodes: Iterable[Node], html: bool) -> list[str | _Op]:
    """Compile nodes to a flat list of constant strings and closures (adjacent texts joined
    once: linear however many there are)."""
    ops: list[str | _Op] = []
    texts: list[str] = []
    for node in nodes:
        if isinstance(node, Text):
            texts.append(node.value)
            continue
        if texts:
            if text := "".join(texts):
                ops.append(text)
            texts.clear()
        ops.append(_compile_var(node, html) if isinstance(node, Var) else _compile_if(node, html))
    if text := "".join(texts):
        ops.append(text)
    return ops


def _compile_var(node: Var, html: bool) -> _Op:
    name = node.name
    if node.default:
        fallback = escape_html(node.default) if html else node.default
        if html:

            def var_default_html(data: Mapping[str, str]) -> str:
                value = _lookup(data, name)
                return escape_html(value) if value else fallback

            return var_default_html

        def var_default_raw(data: Mapping[str, str]) -> str:
            return _lookup(data, name) or fallback

        return var_default_raw
    if html:

        def var_html(data: Mapping[str, str]) -> str:
            return escape_html(_lookup(data, name))

        return var_html

    def var_raw(data: Mapping[str, str]) -> str:
        return _lookup(data, name)

    return var_raw


def _sequence(ops: list[str | _Op]) -> _Op:
    if not ops:
        return lambda data: ""
    if len(ops) == 1:
        only = ops[0]
        if isinstance(only, str):
            return lambda data: only
        return only

    def run(data: Mapping[str, str]) -> str:
        return "".join([op if op.__class__ is str else op(data) for op in ops])  # type: ignore[operator]

    return run


def _compile_if(node: If, html: bool) -> _Op:
    name = node.name
    then = _sequence(_compile(node.body, html))
    orelse = _sequence(_compile(node.orelse, html))
    if node.negate:
        then, orelse = orelse, then

    def branch(data: Mapping[str, str]) -> str:
        return then(data) if _lookup(data, name) else orelse(data)

    return branch


@functools.lru_cache(maxsize=256)
def _cached_renderer(nodes: tuple[Node, ...], html: bool) -> _Op:
    return _sequence(_compile(nodes, html))


def renderer(nodes: Iterable[Node], *, html: bool) -> Callable[[Mapping[str, str]], str]:
    """Compile ``nodes`` once; the returned function renders one recipient.

    Use this in loops; :func:`render` does the same with a small cache.
    """
    return _cached_renderer(tuple(nodes), bool(html))


def render(nodes: Iterable[Node], data: Mapping[str, str], *, html: bool) -> str:
    """Render ``nodes`` with ``data`` (a flat mapping of field name → str).

    ``html=True`` escapes values and fallbacks with the handlebars.js table;
    ``html=False`` (subject, text part) inserts them raw.  Text is emitted
    verbatim in both modes.  Missing names (or ``None``) render as ``""``;
    any other non-``str`` value is a :class:`TypeError` (use
    :func:`merge_value`).
    """
    return renderer(nodes, html=html)(data)
