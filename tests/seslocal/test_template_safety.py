"""seslocal compiles SES templates with pybars3, which turns Handlebars into Python source:
no template may run code here, and every template the product writes still renders as the
product renders it."""

import json

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from hypothesis import assume, given

from seslocal import serve_in_thread
from seslocal.handlebars import CompiledTemplate, TemplateError, compile_template, parse_data
from templates_app.handlebars import to_handlebars
from templates_app.language import parse
from templates_app.render import render
from tests.templates_app.test_handlebars_parity import (
    CASES,
    DATA,
    PARITY_SETTINGS,
    SYSTEM_NAMES,
    merge_dicts,
    representable,
    template_nodes,
)

# Each payload would create MARKER if its Python reached the code pybars generates: a path
# segment or subexpression name closes pybars' string literal and calls open().
OPEN = "open(MARKER,'w')"
PAYLOADS = {
    "bracket segment": "{{[') or OPEN or (']}}",
    "triple stash": "{{{[') or OPEN or (']}}}",
    "ampersand": "{{&[') or OPEN or (']}}",
    "this.[segment]": "{{this.[') or OPEN or (']}}",
    "@../[segment]": "{{#each l}}{{@../[') or OPEN or (']}}{{/each}}",
    "../[segment]": "{{#with u}}{{../[') or OPEN or (']}}{{/with}}",
    "block parameter": "{{#each [') or OPEN or (']}}x{{/each}}",
    "if parameter": "{{#if [') or OPEN or (']}}x{{/if}}",
    "inverted block": "{{^if [') or OPEN or (']}}x{{/if}}",
    "nested in a block": "{{#if a}}{{#each l}}{{[') or OPEN or (']}}{{/each}}{{/if}}",
    "in an else branch": "{{#each l}}x{{else}}{{[') or OPEN or (']}}{{/each}}",
    "helper argument": "{{lookup . [') or OPEN or (']}}",
    "subexpression name": '{{lookup . ([" + str(open(MARKER,"w")) + "])}}',
    "subexpression argument": "{{lookup . (lookup . [') or OPEN or ('])}}",
    "raw block argument": "{{{{raw [') or OPEN or (']}}}}x{{{{/raw}}}}",
    "string with backslashes": '{{lookup . "\\\\" + str(open(MARKER,"w")) + "\\\\"}}',
    "string with a line break": '{{lookup . "a\nb"}}',
    "partial": "{{> [x]}}",
    "partial with context": "{{> x [') or OPEN or (']}}",
    "hash argument": "{{#each l key=[') or OPEN or (']}}x{{/each}}",
    # pybars ends a {{!-- comment at the first "}}": what follows is an expression to it.
    "inside a long comment": "{{!-- }} {{[') or OPEN or (']}} --}}",
    # a quote makes the fast path hand the whole source to pybars unchanged
    "beside an odd quote": "{{lookup . \"'\"}}{{[') or OPEN or (']}}",
    # a CR/LF or control character inside a segment
    "line break in a segment": "{{[a\n') or OPEN or ('\n]}}",
    "unicode quote lookalike": "{{[a\u2019b') or OPEN or (']}}",
}


def payload(template: str, marker) -> str:
    return template.replace("OPEN", OPEN).replace("MARKER", repr(str(marker)))


DATA_WITH_EVERYTHING = parse_data('{"a": 1, "l": [1, 2], "u": {"n": 1}}')


@pytest.mark.parametrize("name", PAYLOADS)
@pytest.mark.parametrize("fast", [True, False])
def test_code_in_a_template_is_refused_and_never_runs(name, fast, tmp_path):
    marker = tmp_path / "ran"
    source = payload(PAYLOADS[name], marker)
    if name == "inside a long comment" and fast:
        # The fast path reads {{!-- … --}} as handlebars.js does: one comment, nothing to run.
        assert compile_template(source)(DATA_WITH_EVERYTHING) == ""
    else:
        with pytest.raises(TemplateError):
            compile_template(source, fast=fast)(DATA_WITH_EVERYTHING)
    assert not marker.exists()


def test_the_refusal_names_what_is_wrong_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(TemplateError, match="unsupported name") as refused:
        CompiledTemplate("ok", None, payload(PAYLOADS["bracket segment"], marker))
    assert str(refused.value).startswith("Html: ")
    with pytest.raises(TemplateError, match="partials"):
        compile_template("{{> footer}}")
    with pytest.raises(TemplateError, match="hash arguments"):
        compile_template("{{#each l sep=1}}{{/each}}")
    assert not marker.exists()


SAFE = [
    ("{{[first name]}}|{{this.[first name]}}", '{"first name": "Ada"}', "Ada|Ada"),
    (
        "{{#each l}}{{@index}}:{{this}}:{{../t}};{{/each}}",
        '{"l": ["a", "b"], "t": "T"}',
        "0:a:T;1:b:T;",
    ),  # fmt: skip
    (
        "{{#each l}}{{#each this}}{{@../index}}{{@index}} {{/each}}{{/each}}",
        '{"l": [[1, 2]]}',
        "00 01 ",
    ),  # fmt: skip
    ("{{#with u}}{{n}}{{/with}}{{u.n}}{{u/n}}", '{"u": {"n": 7}}', "777"),
    (
        "{{lookup . \"k\"}}{{lookup u 'n'}}{{lookup l 1}}",
        '{"k": "K", "u": {"n": 2}, "l": [0, 5]}',
        "K25",
    ),  # fmt: skip
    ("{{lookup . (lookup . 'key')}}", '{"key": "name", "name": "N"}', "N"),
    ("{{#if true}}y{{/if}}{{#if null}}n{{/if}}{{#unless undefined}}u{{/unless}}", "{}", "yu"),
    ("{{{{raw}}}}{{x}}{{{{/raw}}}}", '{"x": 1}', "{{x}}"),
    ("{{[$v]}}{{a-b}}{{@root.a-b}}", '{"$v": 1, "a-b": 2}', "122"),
    ("{{!-- a comment --}}{{! another }}", "{}", ""),
    ('{{x}} it\'s "quoted" \\ text', '{"x": "é"}', 'é it\'s "quoted" \\ text'),
]


@pytest.mark.parametrize(("source", "data", "expected"), SAFE)
def test_ordinary_handlebars_still_compiles(source, data, expected):
    for fast in (True, False):
        assert compile_template(source, fast=fast)(parse_data(data)) == expected


def assert_renders_as_the_product_does(nodes, data):
    for html in (True, False):
        source = to_handlebars(nodes, html=html)
        expected = render(nodes, data, html=html)
        data_json = parse_data(json.dumps(data))
        assert compile_template(source)(data_json) == expected, source
        assert compile_template(source, fast=False)(data_json) == expected, source


@pytest.mark.parametrize("source", CASES)
def test_the_product_templates_render_identically(source):
    nodes = parse(source.replace("{{ _t }}", "{{ vip }}"))
    assert_renders_as_the_product_does(nodes, DATA)


@PARITY_SETTINGS
@given(nodes=template_nodes(SYSTEM_NAMES), data=merge_dicts(SYSTEM_NAMES))
def test_generated_product_templates_render_identically(nodes, data):
    assume(representable(nodes))
    assert_renders_as_the_product_does(nodes, data)


# --- over the API -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    server, url = serve_in_thread(db=":memory:")
    yield boto3.session.Session().client(
        "sesv2",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )
    server.stop()


def test_the_api_refuses_such_templates_as_bad_requests(client, tmp_path):
    marker = tmp_path / "ran"
    content = {"Subject": "s", "Html": payload(PAYLOADS["this.[segment]"], marker)}
    with pytest.raises(ClientError) as refused:
        client.create_email_template(TemplateName="evil", TemplateContent=content)
    assert refused.value.response["Error"]["Code"] == "BadRequestException"
    assert "unsupported name" in refused.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as refused:
        client.send_email(
            FromEmailAddress="from@example.com",
            Destination={"ToAddresses": ["to@example.com"]},
            Content={"Template": {"TemplateContent": content, "TemplateData": "{}"}},
        )
    assert refused.value.response["Error"]["Code"] == "BadRequestException"
    with pytest.raises(ClientError):
        client.get_email_template(TemplateName="evil")  # nothing was stored
    assert not marker.exists()
