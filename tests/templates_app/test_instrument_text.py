"""Click tracking of the text part (templates_app.instrument.instrument_links): where a URL in
plain text ends, what is left alone, and one link index shared with the HTML part."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from templates_app.handlebars import to_handlebars
from templates_app.instrument import MAX_TRACKED_LINKS, instrument_links
from templates_app.language import TemplateLimitError, TemplateSyntaxError, parse
from templates_app.render import render
from templates_app.services import template_compile
from tests.templates_app.test_handlebars_parity import assert_parity

BASE = "https://t.example.com"
DATA = {"_t": "TOK", "unsubscribe_url": f"{BASE}/t/u/UNSUB", "email": "a@b.example",
        "url": "https://field.example/x", "vip": "1"}  # fmt: skip


def link(index: int) -> str:
    return f"{BASE}/t/c/TOK/{index}"


def track(text: str, html: str = "") -> tuple[str, str, list[str]]:
    html_nodes, text_nodes, urls = instrument_links(
        html=parse(html), text=parse(text, part="text"), base_url=BASE + "/"
    )
    return render(text_nodes, DATA, html=False), render(html_nodes, DATA, html=True), urls


@pytest.mark.parametrize(
    ("source", "expected", "url"),
    [
        ("Shop: https://shop.example/x", f"Shop: {link(0)}", "https://shop.example/x"),
        ("https://shop.example/x", link(0), "https://shop.example/x"),
        ("See https://shop.example/x.", f"See {link(0)}.", "https://shop.example/x"),
        ("See https://shop.example/x, then", f"See {link(0)}, then", "https://shop.example/x"),
        ("Now: https://a.example/b?c=1&d=2!", f"Now: {link(0)}!", "https://a.example/b?c=1&d=2"),
        ("(see https://a.example/b)", f"(see {link(0)})", "https://a.example/b"),
        ("(https://w.example/Foo_(bar)).", f"({link(0)}).", "https://w.example/Foo_(bar)"),
        ("[https://a.example/b]", f"[{link(0)}]", "https://a.example/b"),
        ("<https://a.example/b>", f"<{link(0)}>", "https://a.example/b"),
        ('"https://a.example/b"', f'"{link(0)}"', "https://a.example/b"),
        ("'https://a.example/b'", f"'{link(0)}'", "https://a.example/b"),
        ("`https://a.example/b`", f"`{link(0)}`", "https://a.example/b"),
        ("*https://a.example/b*", f"*{link(0)}*", "https://a.example/b"),
        ("line\nhttps://a.example/b\nnext", f"line\n{link(0)}\nnext", "https://a.example/b"),
        ("HTTP://A.example/B;", f"{link(0)};", "HTTP://A.example/B"),
        ("https://a.example/#top", link(0), "https://a.example/#top"),
        ("https://a.example/b%20c", link(0), "https://a.example/b%20c"),
    ],
)
def test_a_url_in_text_ends_where_a_reader_sees_it_end(source, expected, url):
    text, _, urls = track(source)
    assert (text, urls) == (expected, [url])


@pytest.mark.parametrize(
    "source",
    [
        "Yours: https://a.example/?e={{ email }}",  # runs into a field: not a fixed address
        "https://a.example/{% if vip %}vip{% endif %}",  # runs into a condition
        "Yours: {{ url }}",  # a field holding a URL: the contact's value, not the template's
        "Unsubscribe: {{ unsubscribe_url }}",
        f"Already ours: {BASE}/t/c/abc.def/0 and {BASE}/t/o/abc.gif",  # never wrapped twice
        "Not URLs: https:// and https://. and http:/x and ftp://a.example/ and mailto:a@b.example",
        "Glued: xhttps://a.example/ git+https://a.example/r.git",
    ],
)
def test_what_is_not_a_fixed_url_of_the_template_is_left_alone(source):
    text, _, urls = track(source)
    assert urls == []
    assert "/t/c/TOK/" not in text
    assert text == render(parse(source, part="text"), DATA, html=False)


def test_urls_inside_conditions_are_tracked_like_any_other():
    text, _, urls = track("{% if vip %}VIP: https://a.example/vip!{% else %}No{% endif %}")
    assert (text, urls) == (f"VIP: {link(0)}!", ["https://a.example/vip"])


def test_html_and_text_share_one_index_per_destination_and_the_honeypot_comes_after_both():
    text, html, urls = track(
        "Spring: https://a.example/s?x=1&y=2 and https://a.example/text-only",
        '<a href="https://a.example/s?x=1&amp;y=2">Spring</a><a href="https://a.example/h">H</a>',
    )
    assert urls == [
        "https://a.example/s?x=1&y=2",
        "https://a.example/h",
        "https://a.example/text-only",
    ]
    assert text == f"Spring: {link(0)} and {link(2)}"
    assert f'href="{link(0)}"' in html and f'href="{link(1)}"' in html
    assert f'href="{link(3)}" style="display:none"' in html  # the honeypot: one past all three
    assert "/t/o/" not in text  # no pixel in the text part


def test_the_text_part_counts_toward_the_tracked_link_limit_with_its_own_line():
    text = "\n".join(f"https://a.example/{i}" for i in range(MAX_TRACKED_LINKS + 1))
    with pytest.raises(TemplateLimitError) as raised:
        instrument_links(html=(), text=parse(text, part="text"), base_url=BASE)
    assert (raised.value.part, raised.value.line) == ("text", MAX_TRACKED_LINKS + 1)


def test_compiled_templates_track_the_text_part_and_without_a_base_url_nothing():
    source = {"subject": "S", "html": '<a href="https://a.example/">A</a>',
              "text": "A: https://a.example/ B: https://b.example/."}  # fmt: skip
    compiled = template_compile(template=source, tracking_base_url=BASE)
    assert compiled.links == ("https://a.example/", "https://b.example/")
    assert compiled.render(DATA).text == f"A: {link(0)} B: {link(1)}."
    untracked = template_compile(template=source, tracking_base_url=None)
    assert untracked.render(DATA).text == source["text"]


def test_the_text_part_compiles_to_handlebars_that_renders_the_same():
    source = ("Hi {{ first_name }}! https://a.example/?q=1&r=<2> (https://b.example/x_(y)).\n"
              "{% if vip %}https://c.example/{% endif %} {{ unsubscribe_url }}")  # fmt: skip
    _, text_nodes, _ = instrument_links(html=(), text=parse(source, part="text"), base_url=BASE)
    assert "{{{_t}}}" in to_handlebars(text_nodes, html=False)
    assert_parity(text_nodes, {**DATA, "first_name": "Ana & <Bo>"})


_URLISH = st.text(alphabet="ab.:/()[]<>\"'`,;!?*_~ \n{}%&=#+-hHtTpPsS", max_size=60)


@settings(max_examples=200, deadline=None)
@given(before=_URLISH, path=_URLISH, after=_URLISH)
def test_tracking_text_only_ever_replaces_whole_urls_it_returns(before, path, after):
    """Whatever the text, every tracked URL is replaced by its click link and the rest of the
    text is kept as written: undoing the replacement gives the source back."""
    source = f"{before}https://x.example/{path}{after}"
    try:
        nodes = parse(source, part="text")
    except TemplateSyntaxError:  # a generated template that does not parse: not this test's
        return
    _, text_nodes, urls = instrument_links(html=(), text=nodes, base_url=BASE)
    text = render(text_nodes, DATA, html=False)
    for index in range(len(urls) - 1, -1, -1):
        text = text.replace(link(index), urls[index])
    assert text == render(nodes, DATA, html=False)
