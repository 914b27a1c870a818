"""The SES v2 API of seslocal, driven by the real boto3 ``sesv2`` client."""

import base64
import json
import re
import threading
import urllib.error
import urllib.request
from email.message import EmailMessage

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from seslocal import serve_in_thread

CREDENTIALS = {
    "region_name": "us-east-1",
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
}
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})
SESSION = boto3.session.Session()  # one session: its loader caches the service model


def make_client(url):
    return SESSION.client("sesv2", endpoint_url=url, config=NO_RETRIES, **CREDENTIALS)


def local(url, path, body=None, method=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, method=method)  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - local server
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server():
    srv, url = serve_in_thread(db=":memory:")
    yield url
    srv.stop()


@pytest.fixture
def url(server):
    local(server, "/_local/reset", {})
    return server


@pytest.fixture
def client(url):
    return make_client(url)


def messages(url, **query):
    qs = "&".join(f"{k}={urllib.request.quote(str(v))}" for k, v in query.items())
    return local(url, f"/_local/messages?{qs}")


def error_of(excinfo):
    err = excinfo.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


# --- SendEmail ---------------------------------------------------------------------------


def test_send_simple(client, url):
    result = client.send_email(
        FromEmailAddress="Shop <shop@example.com>",
        Destination={
            "ToAddresses": ["Ann <ann@example.com>"],
            "CcAddresses": ["cc@example.com"],
            "BccAddresses": ["bcc@example.com"],
        },
        ReplyToAddresses=["help@example.com"],
        Content={
            "Simple": {
                "Subject": {"Data": "Hello"},
                "Body": {"Text": {"Data": "Hi Ann"}, "Html": {"Data": "<p>Hi Ann</p>"}},
                "Headers": [{"Name": "X-Campaign", "Value": "7"}],
            }
        },
        EmailTags=[{"Name": "campaign", "Value": "7"}],
        ConfigurationSetName="tracking",
    )
    message_id = result["MessageId"]
    assert message_id.startswith("0100") and message_id.endswith("-000000")
    [message] = messages(url)
    assert message["message_id"] == message_id
    assert message["api"] == "SendEmail"
    assert message["from"] == "Shop <shop@example.com>"
    assert message["to"] == ["Ann <ann@example.com>"]
    assert message["cc"] == ["cc@example.com"] and message["bcc"] == ["bcc@example.com"]
    assert sorted(message["recipients"]) == ["ann@example.com", "bcc@example.com", "cc@example.com"]
    assert message["reply_to"] == ["help@example.com"]
    assert (message["subject"], message["text"], message["html"]) == (
        "Hello",
        "Hi Ann",
        "<p>Hi Ann</p>",
    )
    assert message["headers"] == [{"name": "X-Campaign", "value": "7"}]
    assert message["tags"] == [{"name": "campaign", "value": "7"}]
    assert message["configuration_set"] == "tracking"


def test_send_raw_takes_recipients_from_headers_or_destination(client, url):
    mime = EmailMessage()
    mime["From"] = "Shop <shop@example.com>"
    mime["To"] = "Ann <ann@example.com>, bob@example.com"
    mime["Subject"] = "Raw hello"
    mime["X-Campaign"] = "9"
    mime.set_content("plain body")
    mime.add_alternative("<p>html body</p>", subtype="html")

    first = client.send_email(Content={"Raw": {"Data": mime.as_bytes()}})["MessageId"]
    second = client.send_email(
        Destination={"BccAddresses": ["hidden@example.com"]},
        Content={"Raw": {"Data": mime.as_bytes()}},
    )["MessageId"]

    by_id = {m["message_id"]: m for m in messages(url)}
    raw_one = by_id[first]
    assert sorted(raw_one["recipients"]) == ["ann@example.com", "bob@example.com"]
    assert raw_one["from"] == "Shop <shop@example.com>"
    assert raw_one["subject"] == "Raw hello"
    assert raw_one["text"].strip() == "plain body"
    assert raw_one["html"].strip() == "<p>html body</p>"
    assert {"name": "X-Campaign", "value": "9"} in raw_one["headers"]
    assert by_id[second]["recipients"] == ["hidden@example.com"]
    detail = local(url, f"/_local/messages/{first}.json")
    assert "X-Campaign: 9" in detail["raw"]
    with urllib.request.urlopen(f"{url}/_local/messages/{first}.eml") as response:  # noqa: S310
        assert response.headers["Content-Type"] == "message/rfc822"
        assert b"Subject: Raw hello" in response.read()


def test_send_raw_without_from_is_rejected(client):
    mime = EmailMessage()
    mime["To"] = "ann@example.com"
    mime.set_content("x")
    with pytest.raises(client.exceptions.MessageRejected):
        client.send_email(Content={"Raw": {"Data": mime.as_bytes()}})


def test_send_template_by_name_and_inline(client, url):
    client.create_email_template(
        TemplateName="welcome",
        TemplateContent={
            "Subject": "Hi {{name}}",
            "Text": "Dear {{name}}",
            "Html": "<b>{{name}}</b>",
        },
    )
    client.send_email(
        FromEmailAddress="shop@example.com",
        Destination={"ToAddresses": ["ann@example.com"]},
        Content={
            "Template": {
                "TemplateName": "welcome",
                "TemplateData": json.dumps({"name": "Ann & Co"}),
                "Headers": [{"Name": "X-Campaign", "Value": "1"}],
            }
        },
    )
    client.send_email(
        FromEmailAddress="shop@example.com",
        Destination={"ToAddresses": ["bob@example.com"]},
        Content={
            "Template": {
                "TemplateContent": {"Subject": "Inline {{n}}", "Html": "<i>{{n}}</i>"},
                "TemplateData": json.dumps({"n": 5}),
            }
        },
    )
    [ann] = messages(url, to="ann@example.com")
    assert ann["template"] == "welcome"
    assert (ann["subject"], ann["text"], ann["html"]) == (
        "Hi Ann &amp; Co",
        "Dear Ann &amp; Co",
        "<b>Ann &amp; Co</b>",
    )
    assert ann["headers"] == [{"name": "X-Campaign", "value": "1"}]
    [bob] = messages(url, to="bob@example.com")
    assert (bob["template"], bob["subject"], bob["html"], bob["text"]) == (
        None,
        "Inline 5",
        "<i>5</i>",
        None,
    )


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"Destination": {"ToAddresses": ["a@example.com"]}}, "FromEmailAddress"),
        ({"FromEmailAddress": "s@example.com"}, "Destination"),
        ({"FromEmailAddress": "s@example.com", "Destination": {"ToAddresses": []}}, "Destination"),
        ({"FromEmailAddress": "not-an-address", "Destination": {"ToAddresses": ["a@x.com"]}}, ""),
        ({"FromEmailAddress": "s@example.com", "Destination": {"ToAddresses": ["a@b"]}}, ""),
        (
            {
                "FromEmailAddress": "s@example.com",
                "Destination": {"ToAddresses": [f"r{i}@example.com" for i in range(51)]},
            },
            "exceeds 50",
        ),
    ],
)
def test_send_email_validation(client, url, params, reason):
    content = {"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "b"}}}}
    with pytest.raises(client.exceptions.BadRequestException) as excinfo:
        client.send_email(Content=content, **params)
    assert error_of(excinfo) == ("BadRequestException", 400)
    assert reason in excinfo.value.response["Error"]["Message"]
    assert local(url, "/_local/stats")["messages"] == 0


def test_send_email_with_malformed_template_data_is_a_bad_request(client):
    client.create_email_template(TemplateName="t", TemplateContent={"Subject": "{{a}}"})
    with pytest.raises(client.exceptions.BadRequestException, match="TemplateData"):
        client.send_email(
            FromEmailAddress="s@example.com",
            Destination={"ToAddresses": ["a@example.com"]},
            Content={"Template": {"TemplateName": "t", "TemplateData": "{nope"}},
        )


# --- SendBulkEmail -----------------------------------------------------------------------


def bulk_entry(address, data=None, headers=None, tags=None):
    entry = {"Destination": {"ToAddresses": [address]}}
    if data is not None:
        entry["ReplacementEmailContent"] = {
            "ReplacementTemplate": {
                "ReplacementTemplateData": data if isinstance(data, str) else json.dumps(data)
            }
        }
    if headers:
        entry["ReplacementHeaders"] = [{"Name": k, "Value": v} for k, v in headers]
    if tags:
        entry["ReplacementTags"] = [{"Name": k, "Value": v} for k, v in tags]
    return entry


@pytest.fixture
def newsletter(client):
    client.create_email_template(
        TemplateName="newsletter",
        TemplateContent={
            "Subject": "News for {{name}}",
            "Text": "Hi {{name}}, {{greeting}}",
            "Html": "<p>Hi {{name}}, {{greeting}} <a href='{{{link}}}'>x</a></p>",
        },
    )
    return "newsletter"


def test_bulk_renders_each_entry(client, url, newsletter):
    result = client.send_bulk_email(
        FromEmailAddress="Shop <shop@example.com>",
        DefaultContent={
            "Template": {
                "TemplateName": newsletter,
                "TemplateData": json.dumps({"greeting": "hello", "name": "friend"}),
                "Headers": [
                    {"Name": "X-Campaign", "Value": "42"},
                    {"Name": "List-Unsubscribe", "Value": "<mailto:u@example.com>"},
                ],
            }
        },
        DefaultEmailTags=[{"Name": "campaign", "Value": "42"}],
        BulkEmailEntries=[
            bulk_entry(
                "ann@example.com",
                {"name": "Ann", "link": "https://e.example/?a=1&b=2"},
                headers=[("List-Unsubscribe", "<https://u.example/ann>"), ("X-Tag", "a")],
                tags=[("variant", "A")],
            ),
            bulk_entry("bob@example.com", {"name": "<Bob>"}),
            bulk_entry("cat@example.com"),  # no replacement data: the defaults
        ],
    )
    results = result["BulkEmailEntryResults"]
    assert [r["Status"] for r in results] == ["SUCCESS"] * 3
    assert len({r["MessageId"] for r in results}) == 3
    shape = re.compile(
        r"0100[0-9a-f]{12}-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}-000000"
    )
    assert all(shape.fullmatch(r["MessageId"]) for r in results)

    [ann] = messages(url, to="ann@example.com")
    assert ann["message_id"] == results[0]["MessageId"]
    assert ann["template"] == "newsletter"
    assert ann["subject"] == "News for Ann"
    assert ann["text"] == "Hi Ann, hello"  # greeting comes from the default data
    assert ann["html"] == "<p>Hi Ann, hello <a href='https://e.example/?a=1&b=2'>x</a></p>"
    # ReplacementHeaders replace same-named template headers and add the others.
    assert ann["headers"] == [
        {"name": "X-Campaign", "value": "42"},
        {"name": "List-Unsubscribe", "value": "<https://u.example/ann>"},
        {"name": "X-Tag", "value": "a"},
    ]
    assert ann["tags"] == [{"name": "campaign", "value": "42"}, {"name": "variant", "value": "A"}]

    [bob] = messages(url, to="bob@example.com")
    assert bob["subject"] == "News for &lt;Bob&gt;"
    assert {"name": "List-Unsubscribe", "value": "<mailto:u@example.com>"} in bob["headers"]
    [cat] = messages(url, to="cat@example.com")
    assert cat["subject"] == "News for friend"


def test_bulk_bad_entry_data_fails_only_that_entry(client, url, newsletter):
    result = client.send_bulk_email(
        FromEmailAddress="shop@example.com",
        DefaultContent={"Template": {"TemplateName": newsletter}},
        BulkEmailEntries=[
            bulk_entry("a@example.com", {"name": "A"}),
            bulk_entry("b@example.com", "{not json"),
            bulk_entry("c@example.com", {"name": "C"}),
        ],
    )
    a, b, c = result["BulkEmailEntryResults"]
    assert a["Status"] == c["Status"] == "SUCCESS"
    assert b["Status"] == "INVALID_PARAMETER"
    assert "ReplacementTemplateData" in b["Error"] and "MessageId" not in b
    assert sorted(r for m in messages(url) for r in m["recipients"]) == [
        "a@example.com",
        "c@example.com",
    ]


def test_bulk_more_than_50_entries_is_refused(client, url, newsletter):
    with pytest.raises(client.exceptions.BadRequestException) as excinfo:
        client.send_bulk_email(
            FromEmailAddress="shop@example.com",
            DefaultContent={"Template": {"TemplateName": newsletter}},
            BulkEmailEntries=[bulk_entry(f"r{i}@example.com") for i in range(51)],
        )
    assert error_of(excinfo) == ("BadRequestException", 400)
    assert local(url, "/_local/stats")["messages"] == 0


def test_bulk_unknown_template_is_404(client):
    with pytest.raises(client.exceptions.NotFoundException) as excinfo:
        client.send_bulk_email(
            FromEmailAddress="shop@example.com",
            DefaultContent={"Template": {"TemplateName": "missing"}},
            BulkEmailEntries=[bulk_entry("a@example.com")],
        )
    assert error_of(excinfo) == ("NotFoundException", 404)


def test_bulk_by_template_arn(client, url, newsletter):
    result = client.send_bulk_email(
        FromEmailAddress="shop@example.com",
        DefaultContent={
            "Template": {
                "TemplateArn": "arn:aws:ses:us-east-1:123456789012:template/newsletter",
                "TemplateData": '{"name": "Arn"}',
            }
        },
        BulkEmailEntries=[bulk_entry("a@example.com")],
    )
    assert result["BulkEmailEntryResults"][0]["Status"] == "SUCCESS"
    assert messages(url)[0]["subject"] == "News for Arn"


def test_bulk_invalid_recipient_rejects_the_call(client, newsletter):
    with pytest.raises(client.exceptions.BadRequestException, match=r"BulkEmailEntries\[1\]"):
        client.send_bulk_email(
            FromEmailAddress="shop@example.com",
            DefaultContent={"Template": {"TemplateName": newsletter}},
            BulkEmailEntries=[bulk_entry("a@example.com"), bulk_entry("no-at-sign")],
        )


def test_concurrent_bulk_sends_are_all_recorded(url, newsletter):
    clients = [make_client(url) for _ in range(6)]  # sessions are not thread-safe; clients are

    def worker(n):
        client = clients[n]
        for call in range(4):
            client.send_bulk_email(
                FromEmailAddress="shop@example.com",
                DefaultContent={"Template": {"TemplateName": newsletter}},
                BulkEmailEntries=[
                    bulk_entry(f"w{n}-c{call}-{i}@example.com", {"name": str(i)}) for i in range(50)
                ],
            )

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = local(url, "/_local/stats")
    assert stats["messages"] == stats["recipients"] == stats["distinct_recipients"] == 1200
    assert stats["calls"]["SendBulkEmail"] == 24


# --- templates ---------------------------------------------------------------------------


def test_template_crud(client, url):
    content = {"Subject": "S {{a}}", "Text": "T {{a}}", "Html": "<p>{{a}}</p>"}
    client.create_email_template(TemplateName="crud", TemplateContent=content)
    with pytest.raises(client.exceptions.AlreadyExistsException) as excinfo:
        client.create_email_template(TemplateName="crud", TemplateContent=content)
    assert error_of(excinfo) == ("AlreadyExistsException", 400)

    got = client.get_email_template(TemplateName="crud")
    assert got["TemplateName"] == "crud" and got["TemplateContent"] == content

    def send():
        client.send_email(
            FromEmailAddress="s@example.com",
            Destination={"ToAddresses": ["a@example.com"]},
            Content={"Template": {"TemplateName": "crud", "TemplateData": '{"a": 1}'}},
        )
        return messages(url, limit=1)[0]["subject"]

    assert send() == "S 1"
    client.update_email_template(TemplateName="crud", TemplateContent={"Subject": "New {{a}}"})
    assert client.get_email_template(TemplateName="crud")["TemplateContent"] == {
        "Subject": "New {{a}}"
    }
    assert send() == "New 1"  # the compiled-template cache follows updates

    client.delete_email_template(TemplateName="crud")
    for call in (
        lambda: client.get_email_template(TemplateName="crud"),
        lambda: client.delete_email_template(TemplateName="crud"),
        lambda: client.update_email_template(TemplateName="crud", TemplateContent=content),
    ):
        with pytest.raises(client.exceptions.NotFoundException) as excinfo:
            call()
        assert error_of(excinfo) == ("NotFoundException", 404)

    # Re-created under the same name: no stale compiled template.
    client.create_email_template(TemplateName="crud", TemplateContent={"Subject": "Again {{a}}"})
    assert send() == "Again 1"


def test_template_with_broken_handlebars_is_refused(client):
    with pytest.raises(client.exceptions.BadRequestException) as excinfo:
        client.create_email_template(
            TemplateName="broken", TemplateContent={"Subject": "ok", "Html": "{{#if a}}open"}
        )
    assert "never closed" in excinfo.value.response["Error"]["Message"]
    with pytest.raises(client.exceptions.NotFoundException):
        client.get_email_template(TemplateName="broken")


def test_template_name_rules(client):
    with pytest.raises(client.exceptions.BadRequestException):
        client.create_email_template(TemplateName="has space", TemplateContent={"Subject": "x"})


def test_list_templates_paginates(client):
    for name in ("t1", "t2", "t3", "t4", "t5"):
        client.create_email_template(TemplateName=name, TemplateContent={"Subject": name})
    first = client.list_email_templates(PageSize=2)
    assert [t["TemplateName"] for t in first["TemplatesMetadata"]] == ["t1", "t2"]
    assert first["TemplatesMetadata"][0]["CreatedTimestamp"].year >= 2024
    names, token = [], None
    while True:
        page = client.list_email_templates(PageSize=2, **({"NextToken": token} if token else {}))
        names += [t["TemplateName"] for t in page["TemplatesMetadata"]]
        token = page.get("NextToken")
        if not token:
            break
    assert names == ["t1", "t2", "t3", "t4", "t5"]


# --- account, auth, endpoint selection -----------------------------------------------------


def test_get_account_counts_recipients_sent(client):
    account = client.get_account()
    assert account["SendingEnabled"] is True and account["ProductionAccessEnabled"] is True
    assert account["EnforcementStatus"] == "HEALTHY"
    assert account["SendQuota"]["MaxSendRate"] == 1000.0
    assert account["SendQuota"]["SentLast24Hours"] == 0.0
    client.send_email(
        FromEmailAddress="s@example.com",
        Destination={"ToAddresses": ["a@example.com", "b@example.com"]},
        Content={"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "b"}}}},
    )
    assert client.get_account()["SendQuota"]["SentLast24Hours"] == 2.0


def test_configured_max_send_rate():
    srv, url = serve_in_thread(max_send_rate=14)
    try:
        assert make_client(url).get_account()["SendQuota"]["MaxSendRate"] == 14.0
    finally:
        srv.stop()


def test_client_finds_server_through_standard_env_var(url, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", url)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.session.Session().client("sesv2")  # no endpoint_url
    assert client.meta.endpoint_url == url
    client.get_account()
    assert local(url, "/_local/stats")["calls"] == {"GetAccount": 1}


def test_unsigned_requests_are_refused(url):
    request = urllib.request.Request(  # noqa: S310 - local server
        url + "/v2/email/account", headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310 - local server
    assert excinfo.value.code == 403
    assert excinfo.value.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert "SigV4" in json.loads(excinfo.value.read())["message"]


def test_unknown_operation_is_a_client_error(client, url):
    with pytest.raises(ClientError) as excinfo:
        client.get_email_identity(EmailIdentity="example.com")
    assert error_of(excinfo) == ("UnknownOperationException", 404)


def test_raw_base64_wire_format(url):
    """What botocore sends for Raw.Data is base64 in the JSON body; check it round-trips."""
    client = make_client(url)
    data = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: x\r\n\r\nbody\r\n"
    client.send_email(Content={"Raw": {"Data": data}})
    raw = local(url, f"/_local/messages/{messages(url)[0]['message_id']}.json")["raw"]
    assert base64.b64encode(raw.encode()) == base64.b64encode(data)


def test_headers_ses_allows_once_cannot_repeat(client, newsletter):
    twice = [("List-Unsubscribe", "<https://u.example/1>"), ("list-unsubscribe", "<x>")]
    with pytest.raises(client.exceptions.BadRequestException, match="Duplicate header"):
        client.send_bulk_email(
            FromEmailAddress="shop@example.com",
            DefaultContent={"Template": {"TemplateName": newsletter}},
            BulkEmailEntries=[bulk_entry("a@example.com", headers=twice)],
        )
    # X- headers may repeat (Anymail sends one X-Tag per tag)
    client.send_bulk_email(
        FromEmailAddress="shop@example.com",
        DefaultContent={"Template": {"TemplateName": newsletter}},
        BulkEmailEntries=[bulk_entry("a@example.com", headers=[("X-Tag", "a"), ("X-Tag", "b")])],
    )
    # The template's headers repeat one: refused for an entry that keeps both, accepted for
    # an entry whose own header replaces them.
    template = {
        "TemplateName": newsletter,
        "Headers": [{"Name": name, "Value": value} for name, value in twice],
    }
    with pytest.raises(client.exceptions.BadRequestException, match="Duplicate header"):
        client.send_bulk_email(
            FromEmailAddress="shop@example.com",
            DefaultContent={"Template": template},
            BulkEmailEntries=[
                bulk_entry("a@example.com", headers=[("List-Unsubscribe", "<mailto:u@x.example>")]),
                bulk_entry("b@example.com"),
            ],
        )
    answer = client.send_bulk_email(
        FromEmailAddress="shop@example.com",
        DefaultContent={"Template": template},
        BulkEmailEntries=[
            bulk_entry("c@example.com", headers=[("List-Unsubscribe", "<mailto:u@x.example>")])
        ],
    )
    assert answer["BulkEmailEntryResults"][0]["Status"] == "SUCCESS"
    raw = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: 1\r\nSubject: 2\r\n\r\nbody"
    with pytest.raises(client.exceptions.MessageRejected, match="Duplicate header"):
        client.send_email(Content={"Raw": {"Data": raw}})
