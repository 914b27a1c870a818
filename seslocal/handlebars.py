"""Handlebars rendering for SES templates, on top of pybars3.

pybars3 differs from handlebars.js (which SES templates are written for) in a few ways
that matter for email, and this module papers over them without touching site-packages:

* ``{{var}}`` escaping: handlebars.js escapes ``& < > " ' ` =``; pybars3 forgets ``=``.
  Each compiled template gets its own ``prepare``/``escape`` globals, so the fix is local
  to templates compiled here (no global monkey-patching, nothing shared between threads).
* Value stringification follows JavaScript: ``1.0`` renders as ``1``, ``[1, 2]`` as ``1,2``
  and objects as ``[object Object]``.
* pybars3 falls back to *attribute* lookup on dicts, so a missing ``{{items}}`` would
  resolve to ``dict.items``. Template data is therefore parsed into :class:`JsObject`,
  a dict that hides its methods from attribute lookup.
* pybars3 silently accepts unbalanced blocks (``{{#if a}}`` without ``{{/if}}``) and
  unterminated mustaches; :func:`check_syntax` refuses them like handlebars.js does.
* pybars3's parser is slow on long literal text (a 50 kB HTML template takes ~1 s), so
  long text runs are swapped for helper calls before compiling (see :func:`_skeleton`).
* pybars3 compiles a template to Python source with names from the template pasted in
  unescaped, so a template could run code here; :func:`check_tree` refuses every
  expression outside a small safe grammar before any code is generated.

Compiling is serialised with a lock because pybars3's code builder is per class, not
per instance (this module uses its own subclass, so other pybars users in the process
are not affected). Rendering is thread-safe.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson

__all__ = [
    "CompiledTemplate",
    "JsObject",
    "TemplateCache",
    "TemplateError",
    "check_syntax",
    "compile_template",
    "escape_html",
    "merge_data",
    "parse_data",
]


class TemplateError(ValueError):
    """A template does not parse, or failed to render."""


# --- escaping and JavaScript-like stringification -------------------------------------

_ESCAPES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    '"': "&quot;",
    "'": "&#x27;",
    "`": "&#x60;",
    "=": "&#x3D;",
}
_ESCAPE_RE = re.compile(r"[&<>\"'`=]")


def escape_html(text: str) -> str:
    """Escape exactly like handlebars.js ``escapeExpression``."""
    if not _ESCAPE_RE.search(text):
        return text
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], text)


def js_string(value: Any) -> str:
    """Convert a JSON value to text the way JavaScript's ``String(value)`` would."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    if isinstance(value, dict):
        return "[object Object]"
    if isinstance(value, list | tuple):
        # Array.prototype.join renders null/undefined members as empty strings.
        return ",".join("" if v is None else js_string(v) for v in value)
    return str(value)


def _prepare(value: Any, should_escape: bool) -> Any:
    """Replacement for pybars' ``prepare`` used by ``{{var}}`` and ``{{{var}}}``."""
    if value is None:
        return ""
    if type(value) is _pybars.strlist:  # already-rendered block output: never re-escaped
        return value
    text = value if type(value) is str else js_string(value)
    return escape_html(text) if should_escape else text


# --- template data ---------------------------------------------------------------------


class JsObject(dict):
    """A JSON object for pybars: item lookup only, no ``dict`` methods as attributes.

    pybars' ``pick`` tries ``context[name]`` and then ``getattr(context, name)``; with a
    plain dict, ``{{items}}``/``{{values}}``/``{{#if copy}}`` would find dict methods.
    ``keys`` must still *exist* because pybars' ``each`` uses ``hasattr(x, "keys")`` to
    tell objects from arrays; it is shadowed with ``None`` so it renders as empty.
    """

    __slots__ = ()
    keys = None  # type: ignore[assignment]

    def __getattribute__(self, name: str) -> Any:
        if name == "keys" or (name.startswith("__") and name.endswith("__")):
            return object.__getattribute__(self, name)
        raise AttributeError(name)


_DECODER = json.JSONDecoder(object_pairs_hook=JsObject)


def parse_data(text: str | None) -> JsObject:
    """Parse SES ``TemplateData`` (a JSON object in a string). Raises ``ValueError``."""
    if text is None or text == "":
        return JsObject()
    try:
        # orjson, then its dicts made JsObjects: ~5x json's decoder with a pairs hook, which
        # was a tenth of a bulk call's time here (one parse per entry).
        data = _js_objects(orjson.loads(text))
    except orjson.JSONDecodeError:
        # What orjson refuses: NaN, Infinity, lone surrogates. (Integers past 64 bits it
        # reads as floats, as JavaScript's JSON.parse does.)
        data = _DECODER.decode(text)
    if not isinstance(data, JsObject):
        raise ValueError("template data must be a JSON object")
    return data


def _js_objects(value: Any) -> Any:
    if type(value) is dict:
        obj = JsObject(value)
        for key, item in value.items():
            if type(item) is dict or type(item) is list:
                obj[key] = _js_objects(item)
        return obj
    if type(value) is list:
        return [_js_objects(item) for item in value]
    return value


def merge_data(default: JsObject, replacement: JsObject) -> JsObject:
    """Merge per-entry replacement data over the default data.

    Real SES v2 merges key by key (recursively for nested objects; arrays and scalars are
    replaced), rather than using the replacement object wholesale.
    """
    if not default:
        return replacement
    if not replacement:
        return default
    merged = JsObject()
    for key, value in dict.items(default):
        merged[key] = value
    for key, value in dict.items(replacement):
        old = dict.get(merged, key)
        if isinstance(old, JsObject) and isinstance(value, JsObject):
            merged[key] = merge_data(old, value)
        else:
            merged[key] = value
    return merged


# --- scanning and syntax check -----------------------------------------------------------

_BLOCK_OPEN_RE = re.compile(r"^[#^]\s*\*?\s*([^\s}]+)")
_BLOCK_CLOSE_RE = re.compile(r"^/\s*([^\s}]+)")
_TRIPLE_END_RE = re.compile(r"\}~?\}\}")
_LONG_COMMENT_END_RE = re.compile(r"--~?\}\}")


def _line_col(source: str, pos: int) -> str:
    line = source.count("\n", 0, pos) + 1
    col = pos - (source.rfind("\n", 0, pos) + 1) + 1
    return f"line {line}, column {col}"


def _scan(source: str) -> list[tuple[bool, str, int]]:
    """Split a source into ``(is_tag, text, position)`` pieces.

    A tag starts at every ``{{`` (as in pybars' grammar) and ends at ``}}``, at ``}}}``
    for triple-stashes and at ``--}}`` for ``{{!-- long comments --}}``.
    """
    pieces: list[tuple[bool, str, int]] = []
    pos = 0
    while pos < len(source):
        start = source.find("{{", pos)
        if start < 0:
            pieces.append((False, source[pos:], pos))
            break
        if start > pos:
            pieces.append((False, source[pos:start], pos))
        inner = start + 3 if source.startswith("~", start + 2) else start + 2
        if source.startswith("{", inner):
            match = _TRIPLE_END_RE.search(source, inner + 1)
            end = match.end() if match else -1
        elif source.startswith("!--", inner):
            match = _LONG_COMMENT_END_RE.search(source, inner + 3)
            end = match.end() if match else -1
        else:
            found = source.find("}}", inner)
            end = found + 2 if found >= 0 else -1
        if end < 0:
            raise TemplateError(f"unterminated '{{{{' at {_line_col(source, start)}")
        pieces.append((True, source[start:end], start))
        pos = end
    return pieces


def _tag_inner(tag: str) -> str:
    return tag[2:-2].strip("~{} \t\r\n")


def _check_blocks(source: str, pieces: list[tuple[bool, str, int]]) -> None:
    stack: list[tuple[str, int]] = []
    for is_tag, text, start in pieces:
        if not is_tag or text.startswith("{{{") or text.startswith("{{~{"):
            continue
        inner = _tag_inner(text)
        if inner.startswith("!"):
            continue
        opened = _BLOCK_OPEN_RE.match(inner)
        if opened:
            stack.append((opened.group(1), start))
            continue
        closed = _BLOCK_CLOSE_RE.match(inner)
        if not closed:
            continue
        name = closed.group(1)
        if not stack:
            where = _line_col(source, start)
            raise TemplateError(f"'{{{{/{name}}}}}' without an open block at {where}")
        open_name, open_pos = stack.pop()
        if open_name != name:
            raise TemplateError(
                f"'{{{{#{open_name}}}}}' at {_line_col(source, open_pos)} is closed by "
                f"'{{{{/{name}}}}}' at {_line_col(source, start)}"
            )
    if stack:
        name, open_pos = stack[-1]
        raise TemplateError(f"'{{{{#{name}}}}}' at {_line_col(source, open_pos)} is never closed")


def check_syntax(source: str) -> None:
    """Refuse what handlebars.js refuses but pybars3 lets through: unterminated mustaches
    and unbalanced or badly nested blocks. Anything subtler is left to pybars' parser."""
    _check_blocks(source, _scan(source))


# --- what may reach the Python code pybars generates -------------------------------------
#
# pybars3 turns a template into Python source and pastes what it parsed into it as is: a path
# segment between u'…' (``{{[…]}}``, ``{{this.[…]}}``, block parameters), a subexpression's
# name between "…", string literals and partial names with their quotes, hash argument names
# as Python keywords. ``{{[') or __import__('os').system('…') or (']}}`` ran a command. So
# the tree pybars parsed is checked against the grammar below before pybars generates code
# from it (SeslocalCompiler._generate_code): the tree checked is the tree compiled.

# A path segment: a name, or a bracketed one with single inner spaces ("[first name]"); "" is
# "." or "/", "@_parent"/"@@_parent" are pybars' own "../" and "@../". Nothing here can end
# a Python string literal (no quote, backslash or line break).
_SAFE_SEGMENT = re.compile(r"(?:@{0,2}[\w$-]+(?: [\w$-]+)*)?\Z")
_SAFE_SYMBOL = re.compile(r"@?[\w-]+\Z")  # a block or raw block name
_SAFE_STRING = re.compile(r"""(?:"[^"\\\x00-\x1f\x7f]*"|'[^'\\\x00-\x1f\x7f]*')\Z""")
_TEXT_NODES = frozenset({"literal", "newline", "whitespace"})  # emitted with repr()


def _unsafe(what: str, value: object, rule: str = "") -> TemplateError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return TemplateError(f"unsupported {what} {shown}{rule}")


_NAME_RULE = " (names hold letters, digits, '_', '$' and '-')"


def _check_arguments(arguments: list[Any]) -> None:
    for argument in arguments:
        kind = argument[0] if isinstance(argument, tuple) and argument else None
        if kind == "path":
            _check_path(argument)
        elif kind == "literalparam":
            value = argument[1]
            if isinstance(value, str):
                if not _SAFE_STRING.match(value):
                    raise _unsafe("string", value, " (no backslashes or control characters)")
            elif not (value is None or type(value) in (bool, int)):
                raise _unsafe("literal", value)
        elif kind == "subexpr":
            _check_path(argument[1])
            _check_arguments(argument[2])
        elif kind == "kwparam":
            raise TemplateError("hash arguments (name=value) are not supported")
        else:
            raise _unsafe("argument", argument)


def _check_path(path: Any) -> None:
    if not (isinstance(path, tuple) and len(path) == 2 and path[0] == "path"):
        raise _unsafe("expression", path)
    for segment in path[1]:
        if not isinstance(segment, str) or not _SAFE_SEGMENT.match(segment):
            raise _unsafe("name", segment, _NAME_RULE)


def check_tree(tree: list[Any]) -> None:
    """Refuse a parsed template (pybars' tree) holding anything outside the safe grammar:
    names and bracketed segments of letters, digits, ``_ $ -`` (and single inner spaces),
    numbers, ``true``/``false``/``null``/``undefined``, quoted strings without backslashes
    or control characters, subexpressions, blocks, comments and raw blocks. Partials (SES
    has none) and hash arguments are refused too. Iterative: nesting costs no stack."""
    pending: list[Any] = [tree]
    while pending:
        template = pending.pop()
        if not (isinstance(template, list) and template and template[0] == "template"):
            raise _unsafe("template", template)
        for node in template[1:]:
            kind = node[0] if isinstance(node, tuple) and node else None
            if kind in _TEXT_NODES or kind == "comment":
                continue
            if kind in ("escapedexpand", "expand"):
                _check_path(node[1])
                _check_arguments(node[2])
            elif kind in ("block", "invertedblock"):
                if not isinstance(node[1], str) or not _SAFE_SYMBOL.match(node[1]):
                    raise _unsafe("block name", node[1], _NAME_RULE)
                _check_arguments(node[2])
                pending.append(node[3])
                if node[4]:
                    pending.append(node[4])
            elif kind == "rawblock":
                if not isinstance(node[1], str) or not _SAFE_SYMBOL.match(node[1]):
                    raise _unsafe("block name", node[1], _NAME_RULE)
                _check_arguments(node[2])  # (its text is emitted with repr())
            elif kind == "partial":
                raise TemplateError("partials ({{> name}}) are not supported")
            else:
                raise _unsafe("expression", node)


# --- compiling and caching -------------------------------------------------------------

# pybars drops the "\r" of a CRLF that starts a text run (``('\r'?'\n'):char`` keeps the
# last character only); handlebars.js keeps it.
_CRLF_BUG = "newline_text ::= (~(<start>) ('\\r'?'\\n'):char) => ('newline', u'' + char)"
_CRLF_FIX = (
    "newline_text ::= ~(<start>) <line_break>:char => ('newline', char)\n"
    "line_break ::= '\\r' '\\n' => u'\\r\\n'\n"
    "    | '\\n' => u'\\n'"
)


class _Pybars:
    """pybars3, loaded on first use: importing it builds its PEG grammars (~1 s), which
    would otherwise delay the server's start for every run."""

    strlist: type = type(None)  # placeholder until loaded; nothing renders before that
    error: type[Exception] = Exception
    compiler: Any = None

    def load(self) -> None:
        if self.compiler is not None:
            return
        from pybars import Compiler, PybarsError, strlist
        from pybars._compiler import CodeBuilder, compile_grammar, handlebars_grammar
        from pymeta.grammar import OMeta

        class SeslocalCompiler(Compiler):
            """pybars' Compiler with a private code builder, the CRLF fix and the tree check.

            The stock code builder is a class attribute shared by every ``Compiler`` in the
            process; with our own, compiling here cannot race with other pybars users (the
            Django app may use pybars in the same process when seslocal runs in a thread).
            """

            _handlebars = OMeta.makeGrammar(
                handlebars_grammar.replace(_CRLF_BUG, _CRLF_FIX), {}, "seslocal_handlebars"
            )
            _builder = CodeBuilder()
            _compiler = OMeta.makeGrammar(
                compile_grammar, {"builder": _builder}, "seslocal_compile"
            )

            def _generate_code(self, source: str) -> Any:
                # pybars' own steps (pybars 0.9.7), with check_tree between parsing and
                # generating code.
                if not isinstance(source, str):
                    raise PybarsError("Template source must be a unicode string")
                source = self.whitespace_control(source)
                tree, (position, _) = self._handlebars(source).apply("template")
                if position < len(source):
                    raise PybarsError(f"does not parse at {_line_col(source, position)}")
                check_tree(tree)
                self._builder._reset()
                return self._compiler(tree).apply("compile")[0]

        self.strlist, self.error = strlist, PybarsError
        self.compiler = SeslocalCompiler()


_pybars = _Pybars()
_compile_lock = threading.Lock()
_LITERAL_PREFIX = "__seslocal_literal_"
_MIN_LITERAL = 32  # shorter text runs are not worth a helper call

Renderer = Callable[[Any], str]


def _skeleton(pieces: list[tuple[bool, str, int]]) -> tuple[str, dict[str, Any]] | None:
    """Replace long literal text by ``{{{__seslocal_literal_N}}}`` helper calls.

    pybars' parser is a backtracking PEG that costs ~20 us per character, so a 50 kB HTML
    template takes a second to compile. Literal text is opaque to it, so each run's inner
    part is swapped for a helper returning that text; leading and trailing whitespace
    stays in place so Handlebars' standalone-line and ``~`` whitespace rules see exactly
    the same neighbourhood. Also normalises ``{{!-- long comments --}}`` (pybars would end
    them at the first ``}}``). Returns None when the source is too odd to rewrite safely.
    """
    parts: list[str] = []
    literals: dict[str, Any] = {}
    for is_tag, text, _ in pieces:
        if is_tag:
            if text.startswith("{{{{"):
                return None  # raw blocks: leave them to pybars
            inner = text[2:-2]
            if inner.lstrip("~").startswith("!--"):
                text = "{{" + ("~" if inner.startswith("~") else "") + "!c"
                text += ("~" if inner.endswith("~") else "") + "}}"
            elif inner.count('"') % 2 or inner.count("'") % 2:
                return None  # a quoted "}}" may have fooled the scanner
            parts.append(text)
            continue
        core = text.strip()
        if len(core) < _MIN_LITERAL or "}}" in core:
            parts.append(text)
            continue
        name = f"{_LITERAL_PREFIX}{len(literals)}"
        literals[name] = lambda _this, _text=core: _text
        lead = text[: len(text) - len(text.lstrip())]
        trail = text[len(text.rstrip()) :]
        parts.append(f"{lead}{{{{{{{name}}}}}}}{trail}")
    return "".join(parts), literals


def preload() -> None:
    """Load pybars now (the server calls it in a background thread once it is listening), so
    the first CreateEmailTemplate does not wait ~1 s for the grammars; a compile arriving
    meanwhile waits on the lock instead."""
    with _compile_lock:
        _pybars.load()


def _precompile(source: str) -> str:
    with _compile_lock:
        _pybars.load()
        try:
            return _pybars.compiler.precompile(source)
        except TemplateError:
            raise
        except _pybars.error as exc:
            raise TemplateError(str(exc)) from None
        except Exception as exc:  # pymeta parse errors and friends
            raise TemplateError(f"{type(exc).__name__}: {exc}") from None


def compile_template(source: str, fast: bool = True) -> Renderer:
    """Compile one Handlebars source into a thread-safe ``render(data) -> str``.

    ``fast=False`` compiles the source as is (used by tests to check the rewrite)."""
    pieces = _scan(source)
    _check_blocks(source, pieces)
    rewritten = _skeleton(pieces) if fast else None
    to_compile, literals = rewritten if rewritten else (source, {})
    code = _precompile(to_compile)
    # Executed in a private namespace (pybars' own compile() would register a module in
    # sys.modules per template, which leaks when templates change often).
    namespace: dict[str, Any] = {}
    exec(compile(code, "<seslocal-template>", "exec"), namespace)  # noqa: S102
    namespace["prepare"] = _prepare
    namespace["escape"] = escape_html
    render = namespace["render"]
    helpers = literals or None

    def run(data: Any) -> str:
        try:
            return str(render(data, helpers=helpers))
        except _pybars.error as exc:
            raise TemplateError(str(exc)) from None
        except Exception as exc:  # a helper blowing up on odd data
            raise TemplateError(f"{type(exc).__name__}: {exc}") from None

    return run


def _empty(_data: Any) -> str:
    return ""


class CompiledTemplate:
    """The three compiled parts of an SES template."""

    __slots__ = ("subject", "text", "html", "has_text", "has_html")

    def __init__(self, subject: str | None, text: str | None, html: str | None) -> None:
        errors = []
        compiled: list[Renderer] = []
        for part, source in (("Subject", subject), ("Text", text), ("Html", html)):
            if not source:
                compiled.append(_empty)
                continue
            try:
                compiled.append(compile_template(source))
            except TemplateError as exc:
                errors.append(f"{part}: {exc}")
        if errors:
            raise TemplateError("; ".join(errors))
        self.subject, self.text, self.html = compiled
        self.has_text = bool(text)
        self.has_html = bool(html)


class TemplateCache:
    """A small thread-safe LRU of compiled templates keyed by (name, version)."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, str], CompiledTemplate] = OrderedDict()
        self._lock = threading.Lock()

    def get(
        self, key: tuple[str, str], parts: Callable[[], tuple[str | None, str | None, str | None]]
    ) -> CompiledTemplate:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        compiled = CompiledTemplate(*parts())  # compiled outside our lock; may race, harmless
        self.put(key, compiled)
        return compiled

    def put(self, key: tuple[str, str], compiled: CompiledTemplate) -> None:
        with self._lock:
            self._items[key] = compiled
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
