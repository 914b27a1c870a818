"""Parity: our renderer == Handlebars rendering of what to_handlebars() emits.

The reference engine is pybars3 (what the local SES endpoint runs).  pybars3
escapes like handlebars.js except for "=", so the harness gives the compiled
template its own ``prepare`` global with the handlebars.js table — pybars'
``precompile`` produces Python source that we execute in a private namespace,
so nothing in pybars is patched.

When node and the ``handlebars`` npm package are available (for example
``NODE_PATH=/path/to/node_modules``), the same checks also run against
handlebars.js itself, the engine SES templates are written for.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from pybars import Compiler, strlist

from templates_app.handlebars import to_handlebars
from templates_app.language import If, TemplateSyntaxError, Text, Var, parse
from templates_app.render import field_names, merge_data, render

# Reference engines
# ---------------------------------------------------------------------------

# handlebars.js lib/handlebars/utils.js, escapeExpression (written out independently of
# templates_app.language so the test does not check the table against itself).
HANDLEBARS_JS_ESCAPES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    '"': "&quot;",
    "'": "&#x27;",
    "`": "&#x60;",
    "=": "&#x3D;",
}


def handlebars_js_escape(value: str) -> str:
    return "".join(HANDLEBARS_JS_ESCAPES.get(ch, ch) for ch in value)


def _prepare(value, should_escape):
    """pybars' ``prepare`` (pybars/_compiler.py), with the handlebars.js escape table."""
    if value is None:
        return ""
    if type(value) is strlist:
        return value
    if type(value) is not str:
        value = ("true" if value else "false") if type(value) is bool else str(value)
    return handlebars_js_escape(value) if should_escape else value


_compiler = Compiler()


def pybars_render(source: str, data: dict) -> str:
    code = _compiler.precompile(source)
    namespace: dict = {}
    exec(compile(code, "<parity>", "exec"), namespace)  # noqa: S102 (pybars output)
    namespace["prepare"] = _prepare  # the compiled functions look it up as a global
    return str(namespace["render"](data))


_NODE_SCRIPT = r"""
const H = require('handlebars');
const rl = require('readline').createInterface({input: process.stdin, crlfDelay: Infinity});
rl.on('line', (line) => {
  const req = JSON.parse(line);
  let res;
  try { res = {ok: H.compile(req.t)(req.d)}; } catch (e) { res = {err: String(e.message)}; }
  process.stdout.write(JSON.stringify(res) + '\n');
});
"""


class HandlebarsJs:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["node", "-e", _NODE_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )

    def render(self, source: str, data: dict) -> str:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"t": source, "d": data}) + "\n")
        self.proc.stdin.flush()
        result = json.loads(self.proc.stdout.readline())
        if "err" in result:
            raise AssertionError(f"handlebars.js refused {source!r}: {result['err']}")
        return result["ok"]

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def _handlebars_js_available() -> bool:
    if shutil.which("node") is None:
        return False
    probe = subprocess.run(
        ["node", "-e", "require.resolve('handlebars')"],
        capture_output=True,
        env=os.environ,
        check=False,
    )
    return probe.returncode == 0


@pytest.fixture(scope="module")
def handlebars_js():
    if not _handlebars_js_available():
        pytest.skip("node with the handlebars package is not available (set NODE_PATH)")
    engine = HandlebarsJs()
    yield engine
    engine.close()


def assert_parity(nodes, data, *, engine=pybars_render):
    for html in (True, False):
        source = to_handlebars(nodes, html=html)
        expected = render(nodes, data, html=html)
        got = engine(source, data)
        assert got == expected, (html, source)


# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------

# Names that stress Handlebars engines: pybars lexes true…/false…/null…/undefined… as
# literals in block parameters; _t is the system's reserved tracking token.
NAMES = ["a", "b", "first_name", "nullable", "trueColor", "undefined_x", "falsey", "x9", "Zz"]
SYSTEM_NAMES = [*NAMES, "_t"]

FRAGMENTS = [
    *"ab {}}%\\~\"'<>=&`\n\r\t/#!^|:.-",
    "é",
    "😀",
    "\u2028",
    "\ufeff",
    "\xa0",
    "}}",
    "}}}",
    "~}}",
    "\\\\",
    "\r\n",
    "  ",
    "&amp;",
]

text_values = (
    st.lists(st.sampled_from(FRAGMENTS), max_size=8)
    .map("".join)
    .filter(lambda s: "{{" not in s and "{%" not in s)
)
default_values = text_values.filter(lambda s: not s.endswith("{"))
value_strings = st.lists(st.sampled_from(FRAGMENTS), max_size=5).map("".join)


def template_nodes(names, defaults=default_values):
    name = st.sampled_from(names)
    leaves = st.one_of(
        text_values.map(Text),
        st.builds(Var, name, st.none() | defaults),
    )

    def extend(children):
        body = st.lists(children, max_size=4).map(tuple)
        return st.builds(If, name, body, body, st.booleans())

    node = st.recursive(leaves, extend, max_leaves=16)
    return st.lists(node, max_size=8).map(tuple)


def merge_dicts(names):
    return st.dictionaries(st.sampled_from(names), value_strings | st.just(""), max_size=len(names))


def representable(nodes, html=True) -> bool:
    """False for hand-built nodes Handlebars can't express (text "{" right before a tag)."""
    try:
        to_handlebars(nodes, html=html)
    except ValueError as err:
        assert '"{' in str(err)  # the only reason generated nodes can be refused
        return False
    return True


def unparse(nodes) -> str:
    """Marketer source for nodes (the inverse of parse, up to text merging)."""
    out = []
    for node in nodes:
        if isinstance(node, Text):
            out.append(node.value)
        elif isinstance(node, Var):
            if node.default is None:
                out.append("{{ " + node.name + " }}")
            else:
                quoted = node.default.replace("\\", "\\\\").replace('"', '\\"')
                out.append("{{ " + node.name + ' | default: "' + quoted + '" }}')
        else:
            tag = "unless" if node.negate else "if"
            out.append(f"{{% {tag} {node.name} %}}" + unparse(node.body))
            orelse = node.orelse
            while len(orelse) == 1 and isinstance(orelse[0], If) and not orelse[0].negate:
                out.append(f"{{% elsif {orelse[0].name} %}}" + unparse(orelse[0].body))
                orelse = orelse[0].orelse
            if orelse:
                out.append("{% else %}" + unparse(orelse))
            out.append(f"{{% end{tag} %}}")
    return "".join(out)


# pybars compiles slowly (~50 ms for a big template); raise for a deeper search, e.g.
# TEMPLATES_PARITY_EXAMPLES=5000.
PARITY_SETTINGS = settings(
    max_examples=int(os.environ.get("TEMPLATES_PARITY_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# ---------------------------------------------------------------------------
# Hand-written cases
# ---------------------------------------------------------------------------

DATA = {
    "first_name": 'Ana <b>&amp; "Bo"=\'`',
    "last_name": "O'Neil",
    "vip": "yes",
    "city": "",
    "nullable": "n",
    "trueColor": "blue",
    "_t": "tok-123",
}

CASES = [
    "Hello {{ first_name }}!",
    "Hello {{first_name}}!",
    'Hi {{ first_name | default: "there" }}, {{ city | default: "<nowhere> & =" }}',
    "Hi {{ missing | default: 'friend' }}",
    'Quote {{ missing | default: "say \\"hi\\" \\\\ now" }}',
    "{% if vip %}VIP{% elsif city %}city{% else %}other{% endif %}",
    "{% if city %}city{% elsif vip %}vip{% else %}other{% endif %}",
    "{% unless vip %}not vip{% endunless %}",
    "{% unless vip %}not vip{% else %}vip!{% endunless %}",
    "{% unless city %}no city{% elsif vip %}vip{% else %}else{% endunless %}",
    "{% if nullable %}[{{ nullable }}]{% endif %}{% if trueColor %}{{ trueColor }}{% endif %}",
    # standalone lines: handlebars would delete these lines, we keep them
    "<p>\n{% if vip %}\n  VIP\n{% endif %}\n</p>",
    "{% if vip %}\nA\n{% else %}\nB\n{% endif %}\n",
    "  {% if vip %}  \r\n  x\r\n  {% endif %}  \r\n",
    "{% if vip %}{% if city %}\n{% endif %}{% endif %}\n",
    "\n{% if vip %}{% endif %}\n{% unless vip %}{% endunless %}\n",
    "{% if city %}\n{% else %}\n{% endif %}",
    "\u2028{% if vip %}\u2028x\u2028{% endif %}\ufeff",
    # braces and backslashes next to tags
    "a }{{ first_name }}} b",
    "{{ first_name }}}}",
    "{% if vip %}}{% endif %}}",
    "{ {{ first_name }} }",
    "\\{{ first_name }}",
    "\\\\{{ first_name }}\\",
    "{% if vip %}\\{% endif %}\\{% if city %}\\{% else %}\\\\{% endif %}",
    '{{ missing | default: "\\\\" }}{{ missing | default: "}" }}{{ missing | default: "a~}}" }}',
    "x ~}}  y ~}} ~}}} {{ first_name }}~}}",
    "~{{ first_name }}~ ~{% if vip %}~}~{% endif %}",
    # text that looks like Handlebars but is plain text for us
    "#if / else ^ > & {} {x} }{ %} }}{ % }",
    "unicode: 😀 é \xa0 \u2028 日本語 {{ first_name }} 😀",
    "tracking {{ _t }}",
]


@pytest.mark.parametrize("source", CASES)
def test_hand_written_cases_match_pybars(source):
    try:
        nodes = parse(source)
    except TemplateSyntaxError:
        nodes = parse(source.replace("_t", "vip"))  # "{{ _t }}" is only valid from code
    assert_parity(nodes, DATA)
    assert_parity(nodes, {})
    assert_parity(nodes, merge_data(nodes, {}))


def test_reserved_tracking_token_built_by_code():
    nodes = (Text('<a href="https://t.example/c/'), Var("_t"), Text('/0">x</a>'))
    assert_parity(nodes, {"_t": "abc"})
    assert to_handlebars(nodes, html=True) == '<a href="https://t.example/c/{{_t}}/0">x</a>'


def test_plain_output_is_the_documented_shape():
    nodes = parse('Hi {{ first_name | default: "a=b" }}{% unless vip %}!{% endunless %}')
    assert to_handlebars(nodes, html=True) == (
        "Hi {{#if first_name}}{{first_name}}{{else}}a&#x3D;b{{/if}}{{#unless vip}}!{{/unless}}"
    )
    assert to_handlebars(nodes, html=False) == (
        "Hi {{#if first_name}}{{{first_name}}}{{else}}a=b{{/if}}{{#unless vip}}!{{/unless}}"
    )


def test_pybars_escape_differs_only_in_equals_sign():
    """Documents why the harness needs its own escape: stock pybars leaves "=" alone."""
    stock = str(_compiler.compile("{{x}}")({"x": "<a href='x'>=&`\""}))
    ours = pybars_render("{{x}}", {"x": "<a href='x'>=&`\""})
    assert stock == "&lt;a href=&#x27;x&#x27;&gt;=&amp;&#x60;&quot;"
    assert ours == stock.replace("=", "&#x3D;")


def test_pybars_quirks_that_to_handlebars_avoids():
    """The pybars3 behaviours the compiler works around (see language.py)."""
    assert pybars_render("{{#unless a}}y{{else}}n{{/unless}}", {"a": "1"}) == ""  # no else
    assert pybars_render("x\n{{#if a}}\ny\n{{/if}}\n", {"a": "1"}) == "x\ny\n"  # standalone
    assert pybars_render("x ~}}  y", {}) == "x }}y"  # whitespace control inside text
    assert pybars_render("a\\{{x}}", {"x": "X"}) == "a\\X"  # no \{{ escape
    with pytest.raises(Exception):  # noqa: B017 (pymeta/pybars raise several types)
        pybars_render("{{#if nullable}}y{{/if}}", {"nullable": "1"})
    assert pybars_render("{{#if [nullable]}}y{{/if}}", {"nullable": "1"}) == "y"


# ---------------------------------------------------------------------------
# Generated cases
# ---------------------------------------------------------------------------


@PARITY_SETTINGS
@given(nodes=template_nodes(SYSTEM_NAMES), data=merge_dicts(SYSTEM_NAMES))
def test_generated_templates_match_pybars(nodes, data):
    assume(representable(nodes))
    assert_parity(nodes, data)


def _texts_join_into_a_tag(nodes) -> bool:
    run = ""
    for node in nodes:
        if isinstance(node, Text):
            run += node.value
            if "{{" in run or "{%" in run:
                return True
        else:
            run = ""
            if isinstance(node, If) and (
                _texts_join_into_a_tag(node.body) or _texts_join_into_a_tag(node.orelse)
            ):
                return True
    return False


# A quoted fallback can't span lines.
one_line_defaults = default_values.filter(lambda s: "\n" not in s and "\r" not in s)


@PARITY_SETTINGS
@given(nodes=template_nodes(NAMES, one_line_defaults), data=merge_dicts(NAMES))
def test_generated_sources_round_trip_through_parse(nodes, data):
    # Adjacent generated texts such as "{" + "%" join into a tag opener no marketer could have
    # written as text: such node lists have no source form.
    assume(not _texts_join_into_a_tag(nodes))
    source = unparse(nodes)
    try:
        parsed = parse(source)
    except TemplateSyntaxError as err:
        # The only thing generated nodes can get wrong: "{" right before a tag.
        assert "{" in err.reason
        assert not representable(nodes)
        return
    for html in (True, False):
        assert render(parsed, data, html=html) == render(nodes, data, html=html)
    assert field_names(parsed) == field_names(nodes)
    assert_parity(parsed, data)


SOURCE_FRAGMENTS = [
    *FRAGMENTS,
    "{{",
    "}}",
    "{%",
    "%}",
    " if ",
    " elsif ",
    " else ",
    " endif ",
    " unless ",
    " endunless ",
    " a ",
    " b ",
    "first_name",
    " | default: ",
    '"x"',
    "'y'",
    "{{ a }}",
    "{% if a %}",
    "{% else %}",
    "{% endif %}",
    '{{ b | default: "q" }}',
]


@PARITY_SETTINGS
@given(
    source=st.lists(st.sampled_from(SOURCE_FRAGMENTS), max_size=14).map("".join),
    data=merge_dicts(NAMES),
)
def test_any_source_either_fails_cleanly_or_renders_identically(source, data):
    try:
        nodes = parse(source)
    except TemplateSyntaxError as err:
        assert 1 <= err.line <= source.count("\n") + 1
        assert str(err) == f"line {err.line}: {err.reason}"
        event("refused")
        return
    event("parsed")
    assert_parity(nodes, data)


# ---------------------------------------------------------------------------
# handlebars.js (optional)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("source", CASES)
def test_hand_written_cases_match_handlebars_js(handlebars_js, source):
    try:
        nodes = parse(source)
    except TemplateSyntaxError:
        nodes = parse(source.replace("_t", "vip"))
    assert_parity(nodes, DATA, engine=handlebars_js.render)
    assert_parity(nodes, merge_data(nodes, {}), engine=handlebars_js.render)


@PARITY_SETTINGS
@given(nodes=template_nodes(SYSTEM_NAMES), data=merge_dicts(SYSTEM_NAMES))
def test_generated_templates_match_handlebars_js(handlebars_js, nodes, data):
    assume(representable(nodes))
    assert_parity(nodes, data, engine=handlebars_js.render)
