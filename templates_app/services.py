"""Compiling and rendering templates: the one place that turns a Template into messages.

A campaign compiles its template once (CompiledTemplate); the same compiled form gives the SES
stored template for the bulk path (to_handlebars) and the local rendering for previews and the
rendered path, so both paths produce the same message for the same merge data.
"""

import functools
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from django.conf import settings

from templates_app.handlebars import to_handlebars
from templates_app.instrument import instrument_links
from templates_app.language import PARTS, Node, TemplateLimitError, TemplateSyntaxError, parse
from templates_app.models import Template
from templates_app.render import field_names, render

#: SES's quota for one stored template, its three parts together ("up to 500 KB",
#: docs.aws.amazon.com/ses/latest/dg/send-personalized-email-api.html).
SES_TEMPLATE_MAX_BYTES = 500 * 1024
_HANDLEBARS_KEYS = {"subject": "Subject", "html": "Html", "text": "Text"}


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    html: str
    text: str


@dataclass(frozen=True)
class CompiledTemplate:
    subject: tuple[Node, ...]
    html: tuple[Node, ...]
    text: tuple[Node, ...]
    links: tuple[str, ...] = ()  # tracked destinations, by index

    @functools.cached_property
    def fields(self) -> frozenset[str]:
        """The merge fields the template reads (so merge data carries only these). Cached:
        the send asks once per recipient, and walking a large template's nodes is not free
        (docs/PERFORMANCE.md)."""
        return frozenset(field_names(self.subject + self.html + self.text))

    def render(self, data: Mapping[str, str]) -> RenderedMessage:
        return RenderedMessage(
            subject=render(self.subject, data, html=False),
            html=render(self.html, data, html=True),
            text=render(self.text, data, html=False),
        )

    def handlebars(self) -> dict[str, str]:
        """The SES stored-template content: {"Subject", "Html", "Text"}."""
        return dict(self._handlebars)

    @functools.cached_property
    def _handlebars(self) -> dict[str, str]:
        # Compiled once: template_compile checks its size, the start stores it and names it.
        return {
            "Subject": to_handlebars(self.subject, html=False),
            "Html": to_handlebars(self.html, html=True),
            "Text": to_handlebars(self.text, html=False),
        }

    def ses_template_name(self, *, prefix: str, campaign_id: int) -> str:
        """An immutable name per campaign and content: `<prefix>-c<id>-<12 hex of sha256>`."""
        digest = hashlib.sha256(json.dumps(self.handlebars(), sort_keys=True).encode())
        return f"{prefix}-c{campaign_id}-{digest.hexdigest()[:12]}"


def template_errors(*, subject: str, html: str, text: str) -> dict[str, TemplateSyntaxError]:
    """{part: error} for each part that can't be sent, checked as a campaign start compiles it
    (with link tracking); empty when the template can be sent."""
    sources = {"subject": subject, "html": html, "text": text}
    errors = {}
    parsed = {}
    for part in PARTS:
        try:
            parsed[part] = parse(sources[part], part=part)
        except TemplateSyntaxError as err:
            errors[part] = err
    if not errors:
        try:
            _assemble(parsed, tracking_base_url=settings.TRACKING_BASE_URL)
        except TemplateSyntaxError as err:
            errors[err.part or "html"] = err
    return errors


def template_snapshot(*, template: Template) -> dict[str, str]:
    """The template's source parts, to freeze into a campaign when it starts."""
    return {part: getattr(template, part) for part in PARTS}


def template_compile(
    *, template: Template | Mapping[str, str], tracking_base_url: str | None
) -> CompiledTemplate:
    """Parse all parts (of a Template or a snapshot of one); with a tracking base URL, rewrite
    links and add the open pixel.

    Raises TemplateSyntaxError (its reason starts with the part, `part` names it) for a
    template that does not parse, and its TemplateLimitError for one past a limit: a part's
    size, nesting or tags, tracked links, or SES's size for the compiled template. Nothing
    else, whatever the source: parsing, tracking and compiling are linear in its size and
    recurse at most language.MAX_DEPTH levels.
    """
    source = template if isinstance(template, Mapping) else template_snapshot(template=template)
    try:
        parsed = {part: parse(source[part], part=part) for part in PARTS}
        return _assemble(parsed, tracking_base_url=tracking_base_url)
    except TemplateSyntaxError as err:
        raise type(err)(err.line, f"{err.part}: {err.reason}", part=err.part) from err


def _assemble(
    parsed: dict[str, tuple[Node, ...]], *, tracking_base_url: str | None
) -> CompiledTemplate:
    """The parsed parts with tracking (when a base URL is given), checked against SES's size."""
    links: list[str] = []
    if tracking_base_url:
        html, text, links = instrument_links(
            html=parsed["html"], text=parsed["text"], base_url=tracking_base_url
        )
        parsed = {**parsed, "html": html, "text": text}
    compiled = CompiledTemplate(**parsed, links=tuple(links))
    _check_ses_size(compiled)
    return compiled


def _check_ses_size(compiled: CompiledTemplate) -> None:
    content = compiled.handlebars()
    sizes = {part: len(content[key].encode()) for part, key in _HANDLEBARS_KEYS.items()}
    total = sum(sizes.values())
    if total > SES_TEMPLATE_MAX_BYTES:
        largest = max(sizes, key=sizes.__getitem__)
        raise TemplateLimitError(
            1,
            f"compiled for Amazon SES (with tracked links) the template is "
            f"{math.ceil(total / 1024):,} kB, more than the {SES_TEMPLATE_MAX_BYTES // 1024} kB "
            "SES takes for one template; shorten it",
            part=largest,
        )
