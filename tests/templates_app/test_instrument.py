"""Link and open tracking instrumentation of HTML templates."""

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from templates_app.handlebars import to_handlebars
from templates_app.instrument import instrument_html
from templates_app.language import If, Text, Var, parse
from templates_app.render import field_names, render
from tests.templates_app.test_handlebars_parity import (
    FRAGMENTS,
    PARITY_SETTINGS,
    SYSTEM_NAMES,
    assert_parity,
    merge_dicts,
    representable,
    template_nodes,
)

BASE = "https://t.example.com"
IMG = f'<img src="{BASE}/t/o/TOK.gif" width="1" height="1" alt="" style="display:none">'


def trailer(links):
    """The pixel and the honeypot link (index one past the last of `links` real links)."""
    return (
        IMG + f'<a href="{BASE}/t/c/TOK/{links}" style="display:none" aria-hidden="true" '
        'tabindex="-1"></a>'
    )


PIXEL = trailer(0)  # for a template without tracked links
HONEYPOT_ATTRS = '" style="display:none" aria-hidden="true" tabindex="-1"></a>'


def track(source, **kwargs):
    nodes, urls = instrument_html(parse(source), base_url=BASE, **kwargs)
    return nodes, urls


def rendered(source, data=None, **kwargs):
    nodes, urls = track(source, **kwargs)
    html = render(nodes, {"_t": "TOK", **(data or {})}, html=True)
    return html, urls


def link(index):
    return f"{BASE}/t/c/TOK/{index}"


def test_rewrites_a_static_link_into_text_var_text():
    nodes, urls = track('<p><a href="https://shop.example.com/x">Shop</a></p></body>')
    assert urls == ["https://shop.example.com/x"]
    assert nodes == (
        Text(f'<p><a href="{BASE}/t/c/'),
        Var("_t"),
        Text(f'/0">Shop</a></p><img src="{BASE}/t/o/'),
        Var("_t"),
        Text(f'.gif" width="1" height="1" alt="" style="display:none"><a href="{BASE}/t/c/'),
        Var("_t"),
        Text("/1" + HONEYPOT_ATTRS + "</body>"),
    )


def test_full_document_rendering():
    source = (
        '<html><body><a class="btn" HREF="https://shop.example.com/?a=1&amp;b=2">Shop</a>'
        "</body></html>"
    )
    html, urls = rendered(source)
    assert urls == ["https://shop.example.com/?a=1&b=2"]
    assert html == (
        f'<html><body><a class="btn" HREF="{link(0)}">Shop</a>{trailer(1)}</body></html>'
    )


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("<a href='https://x.com/'>", f"<a href='{link(0)}'>"),
        ('<A HREF="https://x.com/">', f'<A HREF="{link(0)}">'),
        ("<a href=https://x.com/>", f'<a href="{link(0)}">'),
        (
            '<a\n  class="c"\n  href = "https://x.com/"\n  target="_blank">',
            f'<a\n  class="c"\n  href = "{link(0)}"\n  target="_blank">',
        ),
        ('<a title="a > b" href="https://x.com/">', f'<a title="a > b" href="{link(0)}">'),
        (
            '<a data-href="https://other/" href="https://x.com/">',
            f'<a data-href="https://other/" href="{link(0)}">',
        ),
        ('<a href=" https://x.com/ ">', f'<a href="{link(0)}">'),
        ('<a href="HTTPS://x.com/">', f'<a href="{link(0)}">'),
        (
            '<a href="https://x.com/" href="https://y.com/">',
            f'<a href="{link(0)}" href="https://y.com/">',
        ),
    ],
)
def test_attribute_syntax_variants(tag, expected):
    html, urls = rendered(tag + "x</a>")
    assert html == expected + "x</a>" + trailer(1)
    assert len(urls) == 1


@pytest.mark.parametrize(
    "source",
    [
        '<a href="mailto:ana@example.com">mail</a>',
        '<a href="tel:+4712345678">call</a>',
        '<a href="#top">top</a>',
        '<a href="/relative/path">rel</a>',
        '<a href="//cdn.example.com/x">proto-relative</a>',
        '<a href="javascript:alert(1)">js</a>',
        '<a href="https://x.com/?e={{ email }}">tagged</a>',
        '<a href="{{ url }}">tagged</a>',
        '<a data-notrack href="https://x.com/">no</a>',
        '<a href="https://x.com/" DATA-NOTRACK="1">no</a>',
        '<a data-href="https://x.com/">not an href</a>',
        '<a {% if vip %}class="v"{% endif %} href="https://x.com/">conditional tag</a>',
        '<abbr href="https://x.com/">abbr</abbr><area href="https://x.com/"><link href="https://x.com/">',
        '<img src="https://x.com/i.png">',
        '<a href="https://x.com/"',  # never closed
        '<a href="https://x.com/>unterminated quote',
        '<p>https://x.com/ as text, and href="https://x.com/" outside a tag</p>',
    ],
)
def test_links_left_alone(source):
    nodes, urls = track(source)
    assert urls == []
    data = {"_t": "TOK", "email": "e", "url": "u", "vip": "1"}
    assert render(nodes, data, html=True) == render(parse(source), data, html=True) + PIXEL


def test_other_attributes_may_contain_template_tags():
    html, urls = rendered(
        '<a title="Hi {{ first_name }}" href="https://x.com/">x</a>', {"first_name": "Ana"}
    )
    assert urls == ["https://x.com/"]
    assert html == f'<a title="Hi Ana" href="{link(0)}">x</a>{trailer(1)}'


def test_same_url_shares_an_index_and_order_is_first_appearance():
    html, urls = rendered(
        '<a href="https://a/">1</a><a href="https://b/">2</a>'
        '<a href="https://a/">3</a><a href="https://a/?x=1&amp;y=2">4</a>'
        '<a href="https://a/?x=1&y=2">5</a>'
    )
    assert urls == ["https://a/", "https://b/", "https://a/?x=1&y=2"]
    assert html == (
        f'<a href="{link(0)}">1</a><a href="{link(1)}">2</a><a href="{link(0)}">3</a>'
        f'<a href="{link(2)}">4</a><a href="{link(2)}">5</a>{trailer(3)}'
    )


@pytest.mark.parametrize(
    ("href", "url"),
    [
        ("https://x/?a=1&amp;b=2", "https://x/?a=1&b=2"),
        ("https://x/?a=1&#38;b=2&#x26;c=3", "https://x/?a=1&b=2&c=3"),
        ("https://x/?q=caf&eacute;", "https://x/?q=café"),
        ("https://x/?a=1&reg=us&copy=2", "https://x/?a=1&reg=us&copy=2"),  # attribute rule
        ("https://x/?a=1&amp=2", "https://x/?a=1&amp=2"),
        ("https://x/?a=1&amp b", "https://x/?a=1& b"),
        ("https://x/&unknown;", "https://x/&unknown;"),
    ],
)
def test_character_references_are_decoded_like_a_browser(href, url):
    _, urls = track(f'<a href="{href}">x</a>')
    assert urls == [url]


def test_links_inside_conditionals_are_tracked_in_document_order():
    source = (
        '<a href="https://first/">f</a>'
        '{% if vip %}<a href="https://vip/">v</a>{% elsif city %}{{ city }}'
        '<a href="https://city/">c</a>{% else %}<a href="https://std/">s</a>{% endif %}'
        '<a href="https://last/">l</a>'
    )
    nodes, urls = track(source)
    assert urls == [
        "https://first/",
        "https://vip/",
        "https://city/",
        "https://std/",
        "https://last/",
    ]
    assert isinstance(nodes[3], If)
    assert render(nodes, {"_t": "TOK", "vip": "1"}, html=True) == (
        f'<a href="{link(0)}">f</a><a href="{link(1)}">v</a><a href="{link(4)}">l</a>{trailer(5)}'
    )
    assert render(nodes, {"_t": "TOK", "city": "Oslo"}, html=True) == (
        f'<a href="{link(0)}">f</a>Oslo<a href="{link(2)}">c</a><a href="{link(4)}">l</a>'
        + trailer(5)
    )
    assert render(nodes, {"_t": "TOK"}, html=True) == (
        f'<a href="{link(0)}">f</a><a href="{link(3)}">s</a><a href="{link(4)}">l</a>{trailer(5)}'
    )


def test_pixel_goes_before_the_last_top_level_closing_body_tag():
    html, _ = rendered("<html><BODY>hi<!-- </body> --></Body >\n</html>")
    assert html == f"<html><BODY>hi<!-- </body> -->{PIXEL}</Body >\n</html>"


def test_pixel_is_appended_without_a_closing_body_tag():
    assert rendered("<p>hi</p>")[0] == "<p>hi</p>" + PIXEL
    assert rendered("")[0] == PIXEL
    assert rendered("{{ a }}", {"a": "x"})[0] == "x" + PIXEL
    # a </body> inside a conditional is not a top-level one
    html, _ = rendered("{% if a %}</body>{% endif %}", {"a": "1"})
    assert html == "</body>" + PIXEL


def test_pixel_nodes():
    nodes, _ = track("<body></body>")
    assert nodes == (
        Text(f'<body><img src="{BASE}/t/o/'),
        Var("_t"),
        Text(f'.gif" width="1" height="1" alt="" style="display:none"><a href="{BASE}/t/c/'),
        Var("_t"),
        Text("/0" + HONEYPOT_ATTRS + "</body>"),
    )


def test_honeypot_link_is_invisible_and_one_past_the_last_real_link():
    html, urls = rendered(
        '<a href="https://a/">a</a>{% if vip %}<a href="https://b/">b</a>{% endif %}</body>'
    )
    assert urls == ["https://a/", "https://b/"]  # the honeypot is not a campaign link
    # Even where the conditional link is not rendered, the honeypot keeps index 2 (the
    # campaign's link count), which is how the click view tells it apart.
    assert html == f'<a href="{link(0)}">a</a>{trailer(2)}</body>'
    honeypot = html.split(IMG)[1].removesuffix("</body>")
    assert honeypot.startswith(f'<a href="{link(2)}"')
    # Nothing a person could see or reach: no content, not displayed, no focus, no label.
    assert honeypot.endswith("></a>")
    for attribute in ('style="display:none"', 'aria-hidden="true"', 'tabindex="-1"'):
        assert attribute in honeypot


def test_base_url_and_token_var_options():
    nodes, urls = instrument_html(
        parse('<a href="https://x/">x</a>'), base_url="https://t.example.com/a&b/", token_var="_tok"
    )
    assert field_names(nodes) == {"_tok"}
    assert render(nodes, {"_tok": "Z"}, html=True) == (
        '<a href="https://t.example.com/a&amp;b/t/c/Z/0">x</a>'
        '<img src="https://t.example.com/a&amp;b/t/o/Z.gif" width="1" height="1" alt="" '
        'style="display:none"><a href="https://t.example.com/a&amp;b/t/c/Z/1' + HONEYPOT_ATTRS
    )


def test_instrumented_template_compiles_with_parity():
    source = (
        "<html><body>\n"
        '{% if vip %}\n<a href="https://vip/?a=1&amp;b=2">VIP</a>\n{% endif %}\n'
        "<a href='https://shop/'>Hi {{ first_name | default: \"there\" }}</a>\n"
        '<a href="mailto:x@y">mail</a><a href="https://shop/">again</a>\n'
        "</body></html>"
    )
    nodes, urls = track(source)
    assert urls == ["https://vip/?a=1&b=2", "https://shop/"]
    hbs = to_handlebars(nodes, html=True)
    assert f'href="{BASE}/t/c/{{{{_t}}}}/0"' in hbs
    assert f'src="{BASE}/t/o/{{{{_t}}}}.gif"' in hbs
    for data in ({"_t": "T1", "vip": "1", "first_name": "A=B"}, {"_t": "T2"}):
        assert_parity(nodes, data)


LINKY = [
    *FRAGMENTS,
    '<a href="https://x.com/?a=1&amp;b=2">',
    "<a href='http://y.org/'>",
    '<a data-notrack href="https://z/">',
    "<A HREF=https://x.com/>",
    "</a>",
    "</body>",
    "<body>",
]
linky_text = (
    st.lists(st.sampled_from(LINKY), max_size=6)
    .map("".join)
    .filter(lambda s: "{{" not in s and "{%" not in s)
)


@settings(PARITY_SETTINGS, max_examples=max(1, PARITY_SETTINGS.max_examples // 2))
@given(
    nodes=template_nodes(SYSTEM_NAMES),
    before=linky_text,
    after=linky_text,
    data=merge_dicts(SYSTEM_NAMES),
)
def test_generated_instrumented_templates_keep_parity(nodes, before, after, data):
    nodes = (Text(before), *nodes, Text(after))
    assume(representable(nodes))
    instrumented, urls = instrument_html(nodes, base_url=BASE)
    assert len(urls) == len(set(urls))
    assert "_t" in field_names(instrumented)
    assert_parity(instrumented, data)
