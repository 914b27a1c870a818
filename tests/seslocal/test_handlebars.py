"""Unit tests of seslocal's Handlebars layer (no server)."""

import math

import pytest

from seslocal.handlebars import (
    CompiledTemplate,
    JsObject,
    TemplateCache,
    TemplateError,
    check_syntax,
    compile_template,
    escape_html,
    js_string,
    merge_data,
    parse_data,
)

# handlebars.js escapeExpression's table.
HANDLEBARS_JS_ESCAPES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    '"': "&quot;",
    "'": "&#x27;",
    "`": "&#x60;",
    "=": "&#x3D;",
}


@pytest.mark.parametrize(("char", "escaped"), HANDLEBARS_JS_ESCAPES.items())
def test_double_stash_escapes_like_handlebars_js(char, escaped):
    render = compile_template("[{{v}}]")
    assert render({"v": f"a{char}b"}) == f"[a{escaped}b]"


def test_escape_table_and_triple_stash():
    text = "& < > \" ' ` = plain é"
    assert escape_html(text) == "&amp; &lt; &gt; &quot; &#x27; &#x60; &#x3D; plain é"
    render = compile_template("{{v}}|{{{v}}}")
    assert render({"v": text}) == f"{escape_html(text)}|{text}"


def test_escaping_is_local_to_seslocal_templates():
    # pybars' own compiler keeps its behaviour: we did not patch it globally.
    from pybars import Compiler

    assert Compiler().compile("{{v}}")({"v": "a=b"}) == "a=b"
    assert compile_template("{{v}}")({"v": "a=b"}) == "a&#x3D;b"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ""),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (3, "3"),
        (1.0, "1"),
        (1.5, "1.5"),
        ([1, "a", None, True], "1,a,,true"),
        ({"a": 1}, "[object Object]"),
    ],
)
def test_values_stringify_like_javascript(value, expected):
    assert js_string(value) == expected


def test_blocks_and_nested_data():
    render = compile_template(
        "{{#if vip}}VIP {{/if}}{{#each items}}<{{this}}>{{/each}}{{#with user}}{{name}}{{/with}}"
        "{{user.name}}{{#unless missing}}!{{/unless}}"
    )
    data = parse_data('{"vip": true, "items": ["a&b", 2], "user": {"name": "Zoë"}}')
    assert render(data) == "VIP <a&amp;b><2>ZoëZoë!"


def test_missing_values_render_empty_even_when_named_like_dict_methods():
    # pybars falls back to attribute lookup on dicts: {{items}} would find dict.items.
    render = compile_template(
        "[{{items}}|{{values}}|{{keys}}|{{get}}|{{#if copy}}x{{/if}}|{{#each items}}y{{/each}}]"
    )
    assert render(parse_data("{}")) == "[|||||]"
    assert render(parse_data('{"items": ["a"]}')) == "[a|||||y]"


def test_each_over_object_gives_key_and_value():
    render = compile_template("{{#each o}}{{@key}}={{this}};{{/each}}")
    assert render(parse_data('{"o": {"a": 1, "b": "x"}}')) == "a=1;b=x;"


@pytest.mark.parametrize(
    "source",
    [
        "{{#if a}}never closed",
        "{{name",
        "{{/if}}",
        "{{#each a}}{{/if}}",
        "{{#if a}}{{#each b}}{{/if}}{{/each}}",
        "{{{raw}}",
    ],
)
def test_broken_templates_are_refused(source):
    with pytest.raises(TemplateError):
        compile_template(source)


@pytest.mark.parametrize(
    "source",
    [
        "plain",
        "{{! a comment }}{{!-- a }} comment --}}ok",
        "{{~#if a~}} x {{~else~}} y {{~/if~}}",
        "{{^if a}}no{{/if}}{{#if a}}yes{{else}}no{{/if}}",
        "\\{{literal}}",
        "a }} b",
    ],
)
def test_valid_templates_pass_the_syntax_check(source):
    check_syntax(source)
    compile_template(source)


def test_syntax_error_names_the_place():
    with pytest.raises(TemplateError, match="line 2"):
        compile_template("ok\n{{#if x}}")
    with pytest.raises(TemplateError, match="Html"):
        CompiledTemplate("fine", "fine", "{{#each x}}")


def test_parse_data_requires_an_object():
    assert parse_data(None) == {}
    assert parse_data("") == {}
    with pytest.raises(ValueError, match="object"):
        parse_data("[1]")
    with pytest.raises(ValueError):
        parse_data("{bad")


def test_nested_objects_hide_dict_methods_too():
    render = compile_template("[{{u.items}}|{{#each l}}{{this.keys}}{{this.n}}{{/each}}]")
    data = parse_data('{"u": {}, "l": [{"n": 1}, {"n": [{"deep": {}}]}]}')
    assert isinstance(data["u"], JsObject)
    assert isinstance(data["l"][1]["n"][0]["deep"], JsObject)
    assert render(data) == "[|1[object Object]]"


def test_parse_data_falls_back_for_what_orjson_refuses():
    assert math.isnan(parse_data('{"x": NaN}')["x"])
    assert parse_data('{"a": 1, "a": 2}') == {"a": 2}  # the last duplicate wins, as in JS


def test_replacement_data_merges_over_default_per_key():
    default = parse_data('{"a": 1, "b": {"x": 1, "y": 2}, "c": [1, 2]}')
    replacement = parse_data('{"b": {"y": 3}, "c": [9], "d": 4}')
    merged = merge_data(default, replacement)
    assert merged == {"a": 1, "b": {"x": 1, "y": 3}, "c": [9], "d": 4}
    assert default["b"] == {"x": 1, "y": 2}  # inputs untouched


def test_cache_compiles_once_per_key():
    cache = TemplateCache(size=2)
    calls = []

    def parts():
        calls.append(1)
        return "S {{a}}", None, None

    first = cache.get(("t", "v1"), parts)
    assert cache.get(("t", "v1"), parts) is first
    assert len(calls) == 1
    cache.get(("t", "v2"), parts)
    cache.get(("u", "v1"), parts)  # evicts ("t", "v1")
    cache.get(("t", "v1"), parts)
    assert len(calls) == 4


LONG = "Lorem ipsum dolor sit amet, consectetur adipiscing elit & more <b>text</b>"
REWRITE_CASES = [
    f"<p>{LONG}</p>\n{{{{name}}}}\n<p>{LONG}</p>",
    f"{LONG}\n  {{{{#if vip}}}}\n  {LONG} {{{{name}}}}\n"
    f"  {{{{else}}}}\n  {LONG}\n  {{{{/if}}}}\n{LONG}",
    f"{{{{#each items}}}}\n    <li>{LONG} {{{{this}}}}</li>\n{{{{/each}}}}\n{LONG}",
    f"{LONG}   {{{{~#if vip~}}}}   {LONG}   {{{{~/if~}}}}   {LONG}",
    f"{{{{! short comment }}}}\n{LONG}\n  {{{{!-- long comment --}}}}\n{LONG}",
    f"\t{LONG}\r\n{{{{#unless vip}}}}\r\n{LONG}\r\n{{{{/unless}}}}\r\n",
    f"{LONG}{{{{{{raw}}}}}}{LONG}{{{{#with user}}}}{LONG}{{{{name}}}}{{{{/with}}}}",
    f"{LONG} a }} b {LONG} {{{{name}}}}",
    f"  \u00a0{LONG}\u00a0 {{{{~name~}}}} \u00a0{LONG}\u00a0  ",
]


@pytest.mark.parametrize("source", REWRITE_CASES)
def test_long_text_rewrite_renders_exactly_like_plain_pybars(source):
    data = parse_data(
        '{"name": "A&B", "vip": true, "items": ["x", "y<"], "raw": "<i>", "user": {"name": "U"}}'
    )
    fast, plain = compile_template(source), compile_template(source, fast=False)
    assert fast(data) == plain(data)
    data["vip"] = False
    assert fast(data) == plain(data)


def test_crlf_line_breaks_survive():
    # stock pybars3 drops the CR of a CRLF that directly follows a tag
    assert compile_template("{{a}}\r\nx\r\n{{b}}\n")({"a": 1, "b": 2}) == "1\r\nx\r\n2\n"


def test_long_comments_are_not_cut_at_the_first_closing_braces():
    assert compile_template("a{{!-- x }} y --}}b")({}) == "ab"


def test_big_templates_render_the_same_through_the_literal_rewrite():
    # (Speed is the bench's business; here: the rewrite that makes 50 kB compile in ms
    # instead of ~1 s renders exactly what pybars renders from the source as is.)
    html = (f"<tr><td>{LONG}</td></tr>\n" * 15 + "<a href='{{{link}}}'>{{name}}</a>\n") * 25
    data = {"name": "N", "link": "L"}
    render = compile_template(html)
    assert render(data) == compile_template(html, fast=False)(data)
    assert render(data).count("<a href='L'>N</a>") == 25
