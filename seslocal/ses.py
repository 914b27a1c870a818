"""The SES v2 operations: request dict in, response dict out (or ``SesError``).

Nothing here knows about HTTP; ``server.py`` routes requests to :class:`SesBackend`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import SesError, bad_request, not_found, throttled
from .events import EventPublisher, EventsConfig
from .faults import Fault, FaultConfig, FaultInjector, RateLimiter
from .handlebars import (
    CompiledTemplate,
    JsObject,
    TemplateCache,
    TemplateError,
    merge_data,
    parse_data,
)
from .messages import (
    OutMessage,
    Recipients,
    check_from,
    check_single_headers,
    merge_headers,
    merge_tags,
    new_message_id,
    new_message_ids,
    parse_address,
    parse_address_list,
    parse_destination,
    parse_headers,
    parse_raw,
    parse_tags,
)
from .store import Store

MAX_BULK_ENTRIES = 50
# SES console rule for template names (the API model itself only says "min 1").
_TEMPLATE_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass
class Settings:
    max_send_rate: float = 1000.0
    max_24_hour_send: float = 50_000_000.0
    store_bodies: bool = True
    enforce_rate: bool = False
    faults: FaultConfig = field(default_factory=FaultConfig)
    events: EventsConfig | None = None  # publish SES events to a webhook (seslocal.events)


@dataclass
class CallContext:
    """Per-call bookkeeping: counters to bump and a few numbers for the log line."""

    api: str
    # When the request reached the endpoint: a message's timestamp. Stamped at arrival rather
    # than after parsing and rendering, so a busy endpoint does not bunch calls that arrived
    # evenly (the send-rate tests read these stamps).
    received: float = field(default_factory=time.time)
    counters: list[str] = field(default_factory=list)
    log: dict[str, Any] = field(default_factory=dict)


def _obj(value: Any, name: str, required: bool = False) -> dict[str, Any]:
    if value is None:
        if required:
            raise bad_request(f"Missing required field {name}.")
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"{name} must be an object.")
    return value


def _str(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise bad_request(f"{name} must be a string.")


class SesBackend:
    def __init__(self, store: Store, settings: Settings | None = None) -> None:
        self.store = store
        self.settings = settings or Settings()
        self.faults = FaultInjector(self.settings.faults)
        self.rate = RateLimiter(self.settings.max_send_rate, self.settings.enforce_rate)
        self.cache = TemplateCache()
        # Set by the server when it publishes events (seslocal.events): it needs the server's URL.
        self.events: EventPublisher | None = None

    def reset(self) -> None:
        """Forget messages, templates and counters; faults go back to the startup config."""
        self.store.reset()
        self.cache.clear()
        self.faults.reset()
        self.rate.reset()
        if self.events is not None:
            self.events.clear()

    # --- account -----------------------------------------------------------------------

    def get_account(self, ctx: CallContext) -> dict[str, Any]:
        s = self.settings
        return {
            "DedicatedIpAutoWarmupEnabled": False,
            "EnforcementStatus": "HEALTHY",
            "ProductionAccessEnabled": True,
            "SendingEnabled": True,
            "SendQuota": {
                "Max24HourSend": s.max_24_hour_send,
                "MaxSendRate": s.max_send_rate,
                "SentLast24Hours": float(self.store.sent_last_24_hours()),
            },
            "SuppressionAttributes": {"SuppressedReasons": ["BOUNCE", "COMPLAINT"]},
            "Details": {
                "MailType": "MARKETING",
                "WebsiteURL": "http://localhost/",
                "ContactLanguage": "EN",
                "UseCaseDescription": "seslocal: local SES v2 endpoint for development",
                "ReviewDetails": {"Status": "GRANTED", "CaseId": "seslocal"},
            },
        }

    # --- templates ---------------------------------------------------------------------

    @staticmethod
    def _content_parts(body: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
        content = _obj(body.get("TemplateContent"), "TemplateContent", required=True)
        subject, text, html = (
            _str(content.get(key), f"TemplateContent.{key}") for key in ("Subject", "Text", "Html")
        )
        return subject, text, html

    def _compile_stored(self, name: str, body: dict[str, Any], store: Callable[..., None]) -> None:
        """Validate and store a template, and keep its compiled form for the sends.

        Real SES accepts some broken Handlebars at create time and fails at send time;
        refusing early is more useful locally."""
        parts = self._content_parts(body)
        try:
            compiled = CompiledTemplate(*parts)
        except TemplateError as exc:
            raise bad_request(f"Invalid template: {exc}") from None
        version = uuid.uuid4().hex
        store(name, *parts, version=version)
        self.cache.put((name, version), compiled)

    def create_email_template(self, body: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        name = body.get("TemplateName")
        if not name:
            raise bad_request("Missing required field TemplateName.")
        if not isinstance(name, str) or not _TEMPLATE_NAME_RE.match(name):
            raise bad_request(
                "Template names may contain only letters, digits, '_' and '-' "
                "and be at most 64 characters long."
            )

        def create(*args: Any, version: str) -> None:
            if not self.store.create_template(*args, version=version):
                raise SesError("AlreadyExistsException", f"Template {name} already exists.")

        self._compile_stored(name, body, create)
        ctx.log["template"] = name
        return {}

    def get_email_template(self, name: str, ctx: CallContext) -> dict[str, Any]:
        template = self.store.get_template(name)
        if template is None:
            raise not_found(f"Template {name} does not exist.")
        content = {
            key: template[col]
            for key, col in (("Subject", "subject"), ("Text", "text"), ("Html", "html"))
            if template[col] is not None
        }
        return {"TemplateName": name, "TemplateContent": content}

    def update_email_template(
        self, name: str, body: dict[str, Any], ctx: CallContext
    ) -> dict[str, Any]:
        def update(*args: Any, version: str) -> None:
            if not self.store.update_template(*args, version=version):
                raise not_found(f"Template {name} does not exist.")

        self._compile_stored(name, body, update)
        ctx.log["template"] = name
        return {}

    def delete_email_template(self, name: str, ctx: CallContext) -> dict[str, Any]:
        if not self.store.delete_template(name):
            raise not_found(f"Template {name} does not exist.")
        ctx.log["template"] = name
        return {}

    def list_email_templates(self, query: dict[str, str], ctx: CallContext) -> dict[str, Any]:
        size_text = query.get("PageSize")
        try:
            size = int(size_text) if size_text else 10
        except ValueError:
            raise bad_request("PageSize must be an integer.") from None
        if not 1 <= size <= 100:
            raise bad_request("PageSize must be between 1 and 100.")
        after = None
        if query.get("NextToken"):
            try:
                after = base64.urlsafe_b64decode(query["NextToken"].encode()).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise bad_request("Invalid NextToken.") from None
        rows = self.store.list_templates(after, size + 1)
        result: dict[str, Any] = {
            "TemplatesMetadata": [
                {"TemplateName": name, "CreatedTimestamp": created} for name, created in rows[:size]
            ]
        }
        if len(rows) > size:
            result["NextToken"] = base64.urlsafe_b64encode(rows[size - 1][0].encode()).decode()
        return result

    def _resolve_template(self, template: dict[str, Any]) -> tuple[str | None, CompiledTemplate]:
        """Find the template a send refers to: by name, by ARN, or inline content."""
        name = _str(template.get("TemplateName"), "TemplateName")
        arn = _str(template.get("TemplateArn"), "TemplateArn")
        content = template.get("TemplateContent")
        if content is not None:
            if name or arn:
                raise bad_request(
                    "Specify TemplateName, TemplateArn or TemplateContent, not several."
                )
            parts = self._content_parts(template)
            digest = hashlib.sha256(json.dumps(parts).encode()).hexdigest()
            try:
                return None, self.cache.get(("", digest), lambda: parts)
            except TemplateError as exc:
                raise bad_request(f"Invalid template: {exc}") from None
        if arn and not name:
            # arn:aws:ses:us-east-1:123456789012:template/NAME
            name = arn.rpartition(":template/")[2] if ":template/" in arn else None
            if not name:
                raise bad_request("Invalid TemplateArn.")
        if not name:
            raise bad_request("Missing required field TemplateName.")
        version = self.store.template_version(name)
        if version is None:
            raise not_found(f"Template {name} does not exist.")

        def load() -> tuple[str | None, str | None, str | None]:
            stored = self.store.get_template(name)
            if stored is None:  # deleted meanwhile
                raise not_found(f"Template {name} does not exist.")
            return stored["subject"], stored["text"], stored["html"]

        try:
            return name, self.cache.get((name, version), load)
        except TemplateError as exc:  # stored before validation existed
            raise bad_request(f"Invalid template: {exc}") from None

    def _render(
        self, compiled: CompiledTemplate, data: JsObject
    ) -> tuple[str, str | None, str | None]:
        """Render one message. Without stored bodies only the subject is rendered: the
        benchmark pushes ~10k recipients/s and body rendering would dominate."""
        subject = compiled.subject(data)
        if not self.settings.store_bodies:
            return subject, None, None
        text = compiled.text(data) if compiled.has_text else None
        html = compiled.html(data) if compiled.has_html else None
        return subject, text, html

    # --- sending -----------------------------------------------------------------------

    def _draw_fault(self, ctx: CallContext) -> Fault:
        fault = self.faults.draw()
        if fault is Fault.THROTTLE:
            ctx.counters.append("throttled")
            ctx.log["fault"] = "throttle"
            raise throttled()
        if fault in (Fault.ERROR_500, Fault.ERROR_503):
            ctx.counters.append("errors_5xx")
            ctx.log["fault"] = "5xx"
            if fault is Fault.ERROR_500:
                raise SesError("InternalFailure", "Internal failure (injected by seslocal).", 500)
            raise SesError("ServiceUnavailable", "Service unavailable (injected by seslocal).", 503)
        return fault

    def _accept(self, messages: list[OutMessage], fault: Fault, ctx: CallContext) -> None:
        """Rate check, then store the messages together with the call's counters."""
        count = sum(len(m.recipients) for m in messages)
        if messages and not self.rate.take(count):
            ctx.counters.append("throttled")
            ctx.log["fault"] = "rate"
            raise throttled()
        if fault is Fault.ERROR_AFTER_ACCEPT:
            ctx.counters.append("errors_5xx")
        counters, ctx.counters = ctx.counters, []
        self.store.record(messages, counters, store_bodies=self.settings.store_bodies)
        if self.events is not None:  # accepted is sent, 5xx after accepting included
            self.events.messages_accepted(messages)
        ctx.log["accepted"] = len(messages)
        ctx.log["recipients"] = count
        if fault is Fault.ERROR_AFTER_ACCEPT:
            ctx.log["fault"] = "5xx_after_accept"
            raise SesError("InternalFailure", "Internal failure (injected by seslocal).", 500)

    @staticmethod
    def _reply_to(body: dict[str, Any]) -> list[str]:
        values = parse_address_list(body.get("ReplyToAddresses"), "ReplyToAddresses")
        for value in values:
            parse_address(value)
        return values

    def send_email(self, body: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        fault = self._draw_fault(ctx)
        content = _obj(body.get("Content"), "Content", required=True)
        kinds = [k for k in ("Simple", "Raw", "Template") if content.get(k) is not None]
        if len(kinds) != 1:
            raise bad_request("Content must contain exactly one of Simple, Raw or Template.")
        kind = kinds[0]
        ctx.log["content"] = kind
        reply_to = self._reply_to(body)
        tags = parse_tags(body.get("EmailTags"), "EmailTags")
        config_set = _str(body.get("ConfigurationSetName"), "ConfigurationSetName")
        template_name = None
        raw = None

        if kind == "Raw":
            raw_part = _obj(content["Raw"], "Content.Raw")
            try:
                raw = base64.b64decode(raw_part.get("Data") or "", validate=True)
            except (binascii.Error, ValueError, TypeError):
                raise bad_request("Content.Raw.Data must be base64-encoded.") from None
            if not raw:
                raise bad_request("Missing required field Content.Raw.Data.")
            parsed = parse_raw(raw, want_bodies=self.settings.store_bodies)
            from_addr = body.get("FromEmailAddress") or parsed.from_addr
            if not from_addr:
                raise SesError("MessageRejected", "Missing required header 'From'.")
            check_from(from_addr)
            destination = body.get("Destination")
            if destination:
                recipients = parse_destination(destination)
            else:  # SES takes the recipients from the message headers
                recipients = parse_destination(
                    {"ToAddresses": parsed.to, "CcAddresses": parsed.cc, "BccAddresses": parsed.bcc}
                )
            subject, headers, text, html = parsed.subject, parsed.headers, parsed.text, parsed.html
            check_single_headers(headers, "MessageRejected")
        else:
            from_addr = check_from(body.get("FromEmailAddress"))
            recipients = parse_destination(body.get("Destination"))
            if kind == "Simple":
                simple = _obj(content["Simple"], "Content.Simple")
                subject_part = _obj(simple.get("Subject"), "Content.Simple.Subject", required=True)
                subject = _str(subject_part.get("Data"), "Subject.Data") or ""
                body_part = _obj(simple.get("Body"), "Content.Simple.Body", required=True)
                text = _str(_obj(body_part.get("Text"), "Body.Text").get("Data"), "Body.Text")
                html = _str(_obj(body_part.get("Html"), "Body.Html").get("Data"), "Body.Html")
                if text is None and html is None:
                    raise bad_request("Content.Simple.Body needs Text or Html.")
                headers = parse_headers(simple.get("Headers"), "Content.Simple.Headers")
                check_single_headers(headers)
            else:
                template = _obj(content["Template"], "Content.Template")
                template_name, compiled = self._resolve_template(template)
                try:
                    data = parse_data(_str(template.get("TemplateData"), "TemplateData"))
                except ValueError as exc:
                    raise bad_request(f"Invalid TemplateData: {exc}") from None
                try:
                    subject, text, html = self._render(compiled, data)
                except TemplateError as exc:
                    raise bad_request(f"Rendering failure: {exc}") from None
                headers = parse_headers(template.get("Headers"), "Content.Template.Headers")
                check_single_headers(headers)
                ctx.log["template"] = template_name or "(inline)"

        message = OutMessage(
            message_id=new_message_id(),
            created=ctx.received,
            api="SendEmail",
            from_addr=from_addr,
            recipients=recipients,
            subject=subject,
            headers=headers,
            tags=tags,
            reply_to=reply_to,
            template=template_name,
            config_set=config_set,
            text=text,
            html=html,
            raw=raw,
        )
        ctx.log["message_id"] = message.message_id
        self._accept([message], fault, ctx)
        return {"MessageId": message.message_id}

    def send_bulk_email(self, body: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        fault = self._draw_fault(ctx)
        from_addr = check_from(body.get("FromEmailAddress"))
        reply_to = self._reply_to(body)
        config_set = _str(body.get("ConfigurationSetName"), "ConfigurationSetName")
        default = _obj(body.get("DefaultContent"), "DefaultContent", required=True)
        template = _obj(default.get("Template"), "DefaultContent.Template", required=True)
        entries = body.get("BulkEmailEntries")
        if not isinstance(entries, list) or not entries:
            raise bad_request("Missing required field BulkEmailEntries.")
        ctx.log["entries"] = len(entries)
        if len(entries) > MAX_BULK_ENTRIES:
            raise bad_request(
                f"Too many bulk email entries: {len(entries)} (the maximum is {MAX_BULK_ENTRIES})."
            )
        template_name, compiled = self._resolve_template(template)
        ctx.log["template"] = template_name or "(inline)"
        try:
            default_data = parse_data(_str(template.get("TemplateData"), "TemplateData"))
        except ValueError as exc:
            raise bad_request(f"Invalid DefaultContent.Template.TemplateData: {exc}") from None
        default_headers = parse_headers(template.get("Headers"), "DefaultContent.Template.Headers")
        default_tags = parse_tags(body.get("DefaultEmailTags"), "DefaultEmailTags")
        try:
            check_single_headers(default_headers)
            defaults_single = True
        except SesError:  # only a problem for entries that do not replace the repeated one
            defaults_single = False

        # Parameter problems reject the whole call (as SES's request validation would);
        # only per-entry data/rendering problems become per-entry statuses.
        prepared: list[tuple[Recipients, list, list, str | None]] = []
        for index, entry in enumerate(entries):
            where = f"BulkEmailEntries[{index}]"
            try:
                entry = _obj(entry, where, required=True)
                recipients = parse_destination(
                    _obj(entry.get("Destination"), f"{where}.Destination", required=True)
                )
                replacement_headers = parse_headers(
                    entry.get("ReplacementHeaders"), "ReplacementHeaders"
                )
                headers = merge_headers(default_headers, replacement_headers)
                # An entry's header replaces the template's of the same name, so with the
                # template's headers free of repeats only the entry's own can repeat.
                check_single_headers(replacement_headers if defaults_single else headers)
                tags = merge_tags(
                    default_tags, parse_tags(entry.get("ReplacementTags"), "ReplacementTags")
                )
                replacement = _obj(entry.get("ReplacementEmailContent"), "ReplacementEmailContent")
                replacement_template = _obj(
                    replacement.get("ReplacementTemplate"), "ReplacementTemplate"
                )
                data_text = _str(
                    replacement_template.get("ReplacementTemplateData"), "ReplacementTemplateData"
                )
            except SesError as exc:
                raise SesError(exc.code, f"{where}: {exc.message}", exc.status) from None
            prepared.append((recipients, headers, tags, data_text))

        results: list[dict[str, str]] = []
        messages: list[OutMessage] = []
        message_ids = iter(new_message_ids(len(prepared)))
        for recipients, headers, tags, data_text in prepared:
            try:
                data = default_data
                if data_text is not None:
                    data = merge_data(default_data, parse_data(data_text))
            except ValueError as exc:
                results.append(
                    {
                        "Status": "INVALID_PARAMETER",
                        "Error": f"Invalid ReplacementTemplateData: {exc}",
                    }
                )
                continue
            try:
                subject, text, html = self._render(compiled, data)
            except TemplateError as exc:
                results.append({"Status": "FAILED", "Error": f"Rendering failure: {exc}"})
                continue
            message = OutMessage(
                message_id=next(message_ids),
                created=ctx.received,
                api="SendBulkEmail",
                from_addr=from_addr,
                recipients=recipients,
                subject=subject,
                headers=headers,
                tags=tags,
                reply_to=reply_to,
                template=template_name,
                config_set=config_set,
                text=text,
                html=html,
            )
            messages.append(message)
            results.append({"Status": "SUCCESS", "MessageId": message.message_id})
        ctx.log["failed"] = len(results) - len(messages)
        self._accept(messages, fault, ctx)
        return {"BulkEmailEntryResults": results}
