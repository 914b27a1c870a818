"""The template language: parsing, errors, sandboxing and local rendering."""

import datetime
import decimal
import time

import pytest

from templates_app.handlebars import to_handlebars
from templates_app.language import RESERVED_NAMES, If, TemplateSyntaxError, Text, Var, parse
from templates_app.render import escape_html, field_names, merge_data, merge_value, render, renderer

# Parsing
# ---------------------------------------------------------------------------


def test_output_with_and_without_spaces():
    expected = (Text("Hello "), Var("first_name"), Text("!"))
    assert parse("Hello {{ first_name }}!") == expected
    assert parse("Hello {{first_name}}!") == expected
    assert parse("Hello {{\n  first_name\n}}!") == expected


def test_default_literals():
    assert parse('{{ first_name | default: "there" }}') == (Var("first_name", "there"),)
    assert parse("{{first_name|default:'there'}}") == (Var("first_name", "there"),)
    assert parse(r'{{ a | default: "say \"hi\" \\ ok" }}') == (Var("a", 'say "hi" \\ ok'),)
    assert parse(r"{{ a | default: 'it\'s' }}") == (Var("a", "it's"),)
    assert parse(r'{{ a | default: "C:\temp" }}') == (Var("a", "C:\\temp"),)
    assert parse('{{ a | default: "}} and %}" }}') == (Var("a", "}} and %}"),)
    assert parse('{{ a | default: "" }}') == (Var("a", ""),)


def test_if_elsif_else_builds_nested_ifs():
    nodes = parse("{% if vip %}V{% elsif city %}C{% else %}E{% endif %}")
    assert nodes == (If("vip", (Text("V"),), (If("city", (Text("C"),), (Text("E"),)),)),)


def test_unless_is_a_negated_if():
    assert parse("{% unless vip %}N{% else %}V{% endunless %}") == (
        If("vip", (Text("N"),), (Text("V"),), negate=True),
    )
    assert parse("{% unless a %}1{% elsif b %}2{% endunless %}") == (
        If("a", (Text("1"),), (If("b", (Text("2"),)),), negate=True),
    )


def test_nested_blocks_and_empty_bodies():
    nodes = parse(
        "{% if a %}{% unless b %}{% endunless %}{% endif %}{% if c %}{% else %}{% endif %}"
    )
    assert nodes == (If("a", (If("b", (), negate=True),)), If("c", ()))


def test_text_keeps_braces_that_are_not_tags():
    source = "a } b }} c %} d { e {x} f"
    assert parse(source) == (Text(source),)
    assert parse("<style>a{color:red}}</style>") == (Text("<style>a{color:red}}</style>"),)
    assert parse("{{ a }}}") == (Var("a"), Text("}"))


ERRORS = [
    # dots / attributes
    (
        "Hi\n{{ user.name }}",
        2,
        "use a plain field name like first_name; dots and attributes are not allowed",
    ),
    ("{% if user.vip %}x{% endif %}", 1, "dots and attributes are not allowed"),
    ("{{ items[0] }}", 1, "dots and attributes are not allowed"),
    ("{{ a() }}", 1, "dots and attributes are not allowed"),
    # reserved and invalid names
    ("\n\n{{ _t }}", 3, "names starting with _ are reserved"),
    ("{% if _secret %}{% endif %}", 1, "names starting with _ are reserved"),
    ("{{ this }}", 1, '"this" is a reserved word'),
    ("{{ log }}", 1, '"log" is a reserved word'),
    ("{% if true %}{% endif %}", 1, '"true" is a reserved word'),
    ("{{ 1st }}", 1, 'field name "1st" must start with a letter'),
    ("{{ prénom }}", 1, "may only contain the letters A-Z and a-z, digits and _"),
    ("{{ first-name }}", 1, 'unexpected "-" after first'),
    ("{{ 'x' }}", 1, "needs a field name, not a quoted text"),
    ("{{ }}", 1, "empty {{ }}"),
    ("{{#if a}}x{{/if}}", 1, '"{{#" is Handlebars syntax'),
    ("{{! note }}", 1, '"{{!" is Handlebars syntax'),
    ("{% %}", 1, "empty {% %} tag"),
    # filters
    ("a\nb\n{{ name | upcase }}", 3, 'filter "upcase" is not supported (only default)'),
    ("{{ x|safe }}", 1, 'filter "safe" is not supported (only default)'),
    ("{{ x | default }}", 1, 'default needs a fallback text in quotes, like default: "there"'),
    ("{{ x | default: there }}", 1, "must be a text in quotes"),
    ('{{ x | default: "a" | default: "b" }}', 1, "only one default filter is allowed"),
    ('{{ x | default: "a" | upcase }}', 1, 'filter "upcase" is not supported'),
    ("{{ x | }}", 1, 'a filter name must follow "|"'),
    ("{{ x y }}", 1, 'unexpected "y" after x'),
    ('{{ x | default: "{{ y" }}', 1, 'the fallback text can\'t contain "{{"'),
    ('{{ x | default: "ends {" }}', 1, 'the fallback text can\'t end with "{"'),
    ("{{- x }}", 1, "whitespace control"),
    ("{%- if x -%}{% endif %}", 1, "whitespace control"),
    # conditions
    ('{% if a == "x" %}{% endif %}', 1, '"==" is not supported in conditions'),
    ("{% if a and b %}{% endif %}", 1, '"and" is not supported in conditions'),
    ("{% if a contains 'b' %}{% endif %}", 1, '"contains" is not supported in conditions'),
    ("{% if %}{% endif %}", 1, "{% if %} needs a field name"),
    ("{% if a %}{% else if b %}{% endif %}", 1, "use {% elsif name %} instead of {% else if %}"),
    ("{% if a %}{% elseif b %}{% endif %}", 1, "use {% elsif name %}"),
    ("{% if a %}{% endif a %}", 1, "{% endif %} takes nothing else"),
    # unknown tags
    ("{% for x in list %}{% endfor %}", 1, "loops are not supported"),
    ('\n{% include "x" %}', 2, 'tag "include" is not supported'),
    ("{% load static %}", 1, 'tag "load" is not supported'),
    ("{% assign a = 1 %}", 1, "variables can't be created"),
    ("{% case a %}{% endcase %}", 1, 'tag "case" is not supported'),
    ("{% raw %}{% endraw %}", 1, 'tag "raw" is not supported'),
    # block structure
    ("x\n{% if a %}\ny\n", 2, "{% if %} is never closed; add {% endif %}"),
    (
        "{% if a %}\n{% unless b %}\n{% endif %}",
        3,
        "{% endif %} does not match {% unless %} from line 2",
    ),
    ("ok\n{% endif %}", 2, "{% endif %} without a matching {% if %}"),
    ("{% endunless %}", 1, "{% endunless %} without a matching {% unless %}"),
    ("{% else %}", 1, "{% else %} without a matching {% if %}"),
    ("{% elsif a %}", 1, "{% elsif %} without a matching {% if %}"),
    (
        "{% if a %}\n{% else %}\n{% else %}{% endif %}",
        3,
        "{% else %} appears twice in the same {% if %} (first on line 2)",
    ),
    ("{% if a %}{% else %}\n{% elsif b %}{% endif %}", 2, "{% elsif %} after {% else %} (line 1)"),
    ("{% unless a %}x", 1, "{% unless %} is never closed; add {% endunless %}"),
    # delimiters
    ("a\nb {{ first_name", 2, '"{{" is not closed with "}}"'),
    ("a\n{{ first_name }\n{{ x }}", 2, '"{{" is not closed with "}}"'),
    ("{% if a }\nx", 1, '"{%" is not closed with "%}"'),
    ('{{ x | default: "abc }}\nmore', 1, "a quoted text inside it is not closed"),
    ("\n{{{ first_name }}}", 2, 'triple braces "{{{" are not supported'),
    ("{{% if a %}{% endif %}", 1, 'a "{" right before a {% tag is not allowed'),
    ("ok\x00", 1, "NUL character"),
]


@pytest.mark.parametrize(("source", "line", "reason"), ERRORS)
def test_syntax_errors_name_the_line_and_reason(source, line, reason):
    with pytest.raises(TemplateSyntaxError) as info:
        parse(source)
    err = info.value
    assert err.line == line
    assert reason in err.reason
    assert str(err) == f"line {err.line}: {err.reason}"
    assert isinstance(err, ValueError)


def test_line_numbers_count_newlines_inside_tags():
    with pytest.raises(TemplateSyntaxError) as info:
        parse("{% if a\n %}\n{{\nx }}\n{{ y.z }}{% endif %}")
    assert info.value.line == 5


def test_error_messages_exact_wording():
    with pytest.raises(
        TemplateSyntaxError, match=r'^line 3: filter "upcase" is not supported \(only default\)$'
    ):
        parse("a\nb\n{{ name | upcase }}")
    with pytest.raises(
        TemplateSyntaxError,
        match=r"^line 2: use a plain field name like first_name; "
        r"dots and attributes are not allowed$",
    ):
        parse("\n{{ user.name }}")


# ---------------------------------------------------------------------------
# Sandbox
# ---------------------------------------------------------------------------

SANDBOX_ATTEMPTS = [
    "{{ settings.SECRET_KEY }}",
    "{{ __class__ }}",
    "{{ first_name.__class__.__mro__ }}",
    "{{ first_name.upper }}",
    "{% load %}",
    "{% load static %}",
    '{% include "x" %}',
    '{% include "admin/base.html" %}',
    '{% extends "base.html" %}',
    "{% debug %}",
    "{% csrf_token %}",
    "{{ x|safe }}",
    "{{ x|escape }}",
    "{{ constructor }}",
    "{{ this }}",
    "{{ lookup }}",
    "{{#with x}}{{/with}}",
    "{{> partial}}",
    "{{! comment }}",
    "{{{ x }}}",
    "{{ x.[0] }}",
    "{{ ../x }}",
    "{{ @root }}",
]


@pytest.mark.parametrize("source", SANDBOX_ATTEMPTS)
def test_sandbox_escapes_are_refused(source):
    with pytest.raises(TemplateSyntaxError):
        parse(source)


def test_a_field_called_settings_is_just_a_missing_field():
    nodes = parse("[{{ settings }}]{% if settings %}leak{% endif %}")
    assert render(nodes, {}, html=True) == "[]"
    assert render(nodes, {"first_name": "x"}, html=False) == "[]"


def test_rendering_only_accepts_strings():
    nodes = parse("{{ a }}")
    with pytest.raises(TypeError, match="merge_value"):
        render(nodes, {"a": 1}, html=True)
    with pytest.raises(TypeError):
        render(parse("{% if a %}x{% endif %}"), {"a": object()}, html=False)
    assert render(nodes, {"a": None}, html=True) == ""
    assert render(nodes, {"a": merge_value(1)}, html=True) == "1"


def test_nodes_refuse_unsafe_names_even_when_built_by_code():
    assert Var("_t").name == "_t"  # the system's tracking token
    for bad in ["a.b", "}}{{x", "a b", "", "1a", "this", "constructor", "log", "é"]:
        with pytest.raises(ValueError):
            Var(bad)
        with pytest.raises(ValueError):
            If(bad, ())
    with pytest.raises(TypeError):
        Text(1)
    with pytest.raises(TypeError):
        Var("a", default=3)
    with pytest.raises(TypeError):
        If("a", ("not a node",))


def test_if_coerces_lists_to_tuples():
    node = If("a", [Text("x")], [Text("y")])
    assert node.body == (Text("x"),) and node.orelse == (Text("y"),)
    hash(node)


def test_reserved_names_cover_handlebars_builtins():
    for name in ["if", "unless", "each", "with", "lookup", "log", "else", "this", "true", "null"]:
        assert name in RESERVED_NAMES


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


def test_fallbacks():
    nodes = parse('Hi {{ first_name | default: "there" }}!')
    assert render(nodes, {"first_name": "Ana"}, html=True) == "Hi Ana!"
    assert render(nodes, {"first_name": ""}, html=True) == "Hi there!"
    assert render(nodes, {}, html=True) == "Hi there!"
    assert render(nodes, {"first_name": None}, html=False) == "Hi there!"
    assert render(parse('{{ a | default: "" }}'), {}, html=True) == ""


def test_conditionals_and_truthiness():
    nodes = parse("{% if vip %}V{% elsif city %}C:{{ city }}{% else %}E{% endif %}")
    assert render(nodes, {"vip": "yes"}, html=True) == "V"
    assert render(nodes, {"vip": "0"}, html=True) == "V"  # any non-empty string is true
    assert render(nodes, {"vip": "false"}, html=True) == "V"
    assert render(nodes, {"vip": "", "city": "Oslo"}, html=True) == "C:Oslo"
    assert render(nodes, {}, html=True) == "E"
    assert render(nodes, {"vip": merge_value(False)}, html=True) == "E"


def test_unless():
    nodes = parse("{% unless vip %}N{% elsif city %}C{% else %}V{% endunless %}")
    assert render(nodes, {}, html=True) == "N"
    assert render(nodes, {"vip": "1", "city": "x"}, html=True) == "C"
    assert render(nodes, {"vip": "1"}, html=True) == "V"


def test_html_mode_escapes_values_and_fallbacks_with_the_handlebars_table():
    nodes = parse('<b>{{ v }}</b>|{{ missing | default: "<&>\\"\'`=" }}')
    data = {"v": "& < > \" ' ` = é"}
    assert render(nodes, data, html=True) == (
        "<b>&amp; &lt; &gt; &quot; &#x27; &#x60; &#x3D; é</b>|&lt;&amp;&gt;&quot;&#x27;&#x60;&#x3D;"
    )
    assert render(nodes, data, html=False) == "<b>& < > \" ' ` = é</b>|<&>\"'`="


def test_text_is_verbatim_in_both_modes():
    source = '<p class="x">&amp; \' ` = </p>'
    nodes = parse(source)
    assert render(nodes, {}, html=True) == source
    assert render(nodes, {}, html=False) == source


def test_escape_html_table():
    assert escape_html("plain") == "plain"
    assert escape_html("&<>\"'`=") == "&amp;&lt;&gt;&quot;&#x27;&#x60;&#x3D;"
    assert escape_html("&amp;") == "&amp;amp;"  # values are never trusted as HTML


def test_renderer_is_compiled_once_and_reused():
    nodes = parse("{{ a }}")
    assert renderer(nodes, html=True) is renderer(nodes, html=True)
    assert renderer(nodes, html=True)({"a": "<"}) == "&lt;"
    assert renderer(list(nodes), html=False)({"a": "<"}) == "<"


def test_rendering_a_large_template_is_fast():
    block = '<tr><td style="padding:4px">' + "x" * 400 + "</td></tr>\n"
    source = (
        "<html><body>"
        + "".join(
            block + '{{ first_name | default: "there" }}{% if vip %}<b>{{ city }}</b>{% endif %}'
            for _ in range(100)
        )
        + "</body></html>"
    )
    assert len(source) > 45_000
    nodes = parse(source)
    data = {"first_name": "Ana & Bo", "vip": "1", "city": "Oslo"}
    render(nodes, data, html=True)
    start = time.perf_counter()
    for _ in range(200):
        render(nodes, data, html=True)
    per_render = (time.perf_counter() - start) / 200
    assert per_render < 0.005, per_render  # typically ~0.1 ms


# ---------------------------------------------------------------------------
# Merge values and fields
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ""),
        (False, ""),
        (True, "true"),
        (0, "0"),
        (42, "42"),
        (-7, "-7"),
        (3.0, "3"),
        (-0.0, "0"),
        (0.1, "0.1"),
        (2.5, "2.5"),
        (1e20, "1e+20"),
        (1.5e-7, "1.5e-07"),
        (float("nan"), ""),
        (float("inf"), ""),
        (decimal.Decimal("19.99"), "19.99"),
        (datetime.date(2024, 5, 1), "2024-05-01"),
        (datetime.datetime(2024, 5, 1, 12, 30), "2024-05-01T12:30:00"),
        ("", ""),
        ("Ana", "Ana"),
        ([1, 2], ""),
        ({"a": 1}, ""),
        (object(), ""),
    ],
)
def test_merge_value(value, expected):
    result = merge_value(value)
    assert result == expected
    assert type(result) is str


def test_merge_value_returns_plain_str_for_str_subclasses():
    class Sneaky(str):
        def translate(self, table):  # pragma: no cover - must never be called
            raise AssertionError

    assert type(merge_value(Sneaky("x"))) is str


def test_field_names_and_merge_data():
    nodes = parse(
        "{{ a }}{% if b %}{% unless c %}{{ d | default: 'x' }}"
        "{% else %}{{ e }}{% endunless %}{% endif %}"
    )
    assert field_names(nodes) == {"a", "b", "c", "d", "e"}
    assert merge_data(nodes, {"a": 1, "b": True, "z": "unused"}) == {
        "a": "1",
        "b": "true",
        "c": "",
        "d": "",
        "e": "",
    }


def test_to_handlebars_refuses_what_it_cannot_express():
    with pytest.raises(ValueError, match=r'"\{"'):
        to_handlebars((Text("a{"), Var("x")), html=True)
    with pytest.raises(ValueError, match=r'"\{\{"'):
        to_handlebars((Text("a{"), Text("{b")), html=True)
    with pytest.raises(ValueError, match="NUL"):
        to_handlebars((Text("a\x00"),), html=False)
    assert to_handlebars((Text("a{"),), html=True) == "a{"  # fine at the very end
