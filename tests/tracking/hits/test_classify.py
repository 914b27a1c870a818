"""Human or machine: every rule of tracking.hits.classify on recorded traffic patterns (user agents
and addresses as they arrive in access logs, timings relative to the send)."""

import ipaddress

import pytest

from tracking.hits.classify import (
    ALL_LINKS_WINDOW_SECONDS,
    CLICK,
    FAST_CLICK_SECONDS,
    HONEYPOT_WINDOW_SECONDS,
    NETWORKS,
    OPEN,
    Click,
    burst_reasons,
    classify_hit,
    network_of,
    parse_ip,
)

SAFARI_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
)
CHROME_WIN = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
IPHONE_MAIL = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Mobile/15E148"
)
OUTLOOK = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)"
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
YAHOO_PROXY = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
HOME = "81.2.69.160"  # a residential address, in no table

# (kind, method, user agent, address, seconds since the send, honeypot) → (verdict, reason)
CASES = [
    # People.
    (OPEN, "GET", SAFARI_MAC, HOME, 3600, False, "human", "default"),
    (OPEN, "GET", OUTLOOK, "2001:db8::1", None, False, "human", "default"),
    (CLICK, "GET", CHROME_WIN, HOME, 3600, False, "human", "default"),
    (CLICK, "GET", IPHONE_MAIL, HOME, FAST_CLICK_SECONDS, False, "human", "default"),
    # Apple Mail Privacy Protection: the bare user agent, from Apple or Private Relay egress.
    (OPEN, "GET", "Mozilla/5.0", "17.58.101.5", 2, False, "machine", "apple-mpp"),
    (OPEN, "GET", "Mozilla/5.0", HOME, 2, False, "machine", "apple-mpp"),
    (OPEN, "GET", IPHONE_MAIL, "172.226.44.9", 30, False, "machine", "apple-mpp"),
    (OPEN, "GET", IPHONE_MAIL, "104.28.41.77", 30, False, "machine", "apple-mpp"),
    (OPEN, "GET", IPHONE_MAIL, "146.75.166.20", 30, False, "machine", "apple-mpp"),
    (OPEN, "GET", IPHONE_MAIL, "2a02:26f7:b3c0:4000::12", 30, False, "machine", "apple-mpp"),
    (OPEN, "GET", IPHONE_MAIL, "2a09:bac2:b089:100::5", 30, False, "machine", "apple-mpp"),
    (OPEN, "GET", IPHONE_MAIL, "::ffff:17.1.2.3", 30, False, "machine", "apple-mpp"),
    # …but a person browsing through Private Relay clicks from those addresses too.
    (CLICK, "GET", IPHONE_MAIL, "172.226.44.9", 3600, False, "human", "default"),
    (CLICK, "GET", SAFARI_MAC, "17.58.101.5", 3600, False, "human", "default"),
    # Gmail's and Yahoo's proxies fetch as the person opens: human, with their reason.
    (OPEN, "GET", GMAIL_PROXY, "66.249.93.12", 5, False, "human", "gmail-proxy"),
    (OPEN, "GET", YAHOO_PROXY, "98.137.11.163", 600, False, "human", "yahoo-proxy"),
    # Link scanners, by user agent…
    (CLICK, "GET", "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))", HOME, 3600, False,
     "machine", "barracuda"),
    (OPEN, "GET", "BarracudaCentral/1.0", HOME, 3600, False, "machine", "barracuda"),
    (CLICK, "GET", "Mimecast URL Protect", HOME, 3600, False, "machine", "mimecast"),
    (CLICK, "GET", "Proofpoint URL Defense", HOME, 3600, False, "machine", "proofpoint"),
    (CLICK, "GET", "Microsoft-URLAnalyzer/1.0", HOME, 3600, False, "machine", "safe-links"),
    (CLICK, "GET", "Microsoft Office Existence Discovery", HOME, 3600, False, "machine",
     "safe-links"),
    # …and by network, whatever browser they pretend to be.
    (CLICK, "GET", CHROME_WIN, "40.107.22.43", 3600, False, "machine", "safe-links"),
    (CLICK, "GET", CHROME_WIN, "52.101.4.1", 3600, False, "machine", "safe-links"),
    (OPEN, "GET", CHROME_WIN, "2a01:111:f403:c201::1", 3600, False, "machine", "safe-links"),
    (CLICK, "GET", CHROME_WIN, "148.163.150.7", 3600, False, "machine", "proofpoint"),
    (CLICK, "GET", CHROME_WIN, "67.231.149.3", 3600, False, "machine", "proofpoint"),
    (CLICK, "GET", CHROME_WIN, "205.139.110.61", 3600, False, "machine", "mimecast"),
    (CLICK, "GET", CHROME_WIN, "91.220.42.240", 3600, False, "machine", "mimecast"),
    (CLICK, "GET", CHROME_WIN, "64.235.150.250", 3600, False, "machine", "barracuda"),
    (OPEN, "GET", CHROME_WIN, "209.222.82.50", 3600, False, "machine", "barracuda"),
    # Robots and HTTP libraries.
    (CLICK, "GET", "curl/8.5.0", HOME, 3600, False, "machine", "bot-ua"),
    (CLICK, "GET", "python-requests/2.31.0", HOME, 3600, False, "machine", "bot-ua"),
    (CLICK, "GET", "Go-http-client/1.1", HOME, 3600, False, "machine", "bot-ua"),
    (CLICK, "GET", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
     HOME, 3600, False, "machine", "bot-ua"),
    (CLICK, "GET", "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/120.0.0.0 Safari/537.36",
     HOME, 3600, False, "machine", "bot-ua"),
    (OPEN, "GET", "", HOME, 3600, False, "machine", "no-ua"),
    (CLICK, "GET", "   ", HOME, 3600, False, "machine", "no-ua"),
    # A click within seconds of the send: a gateway scanning on arrival.
    (CLICK, "GET", CHROME_WIN, HOME, 0.4, False, "machine", "fast-click"),
    (CLICK, "GET", CHROME_WIN, HOME, FAST_CLICK_SECONDS - 0.01, False, "machine", "fast-click"),
    (OPEN, "GET", CHROME_WIN, HOME, 0.4, False, "human", "default"),  # opens: no such rule
    (CLICK, "GET", CHROME_WIN, HOME, None, False, "human", "default"),  # send time unknown
    # HEAD: a link checker, even with a browser's user agent.
    (CLICK, "HEAD", CHROME_WIN, HOME, 3600, False, "machine", "head"),
    (OPEN, "HEAD", SAFARI_MAC, HOME, 3600, False, "machine", "head"),
    # The honeypot wins over everything: no person can see that link.
    (CLICK, "GET", CHROME_WIN, HOME, 3600, True, "machine", "honeypot"),
    (CLICK, "HEAD", "curl/8.5.0", "40.107.22.43", 1, True, "machine", "honeypot"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "method", "user_agent", "ip", "since_send", "honeypot", "verdict", "reason"), CASES
)
def test_verdicts_on_recorded_traffic(
    kind, method, user_agent, ip, since_send, honeypot, verdict, reason
):
    result = classify_hit(
        kind=kind,
        method=method,
        user_agent=user_agent,
        ip=ip,
        seconds_since_send=since_send,
        honeypot=honeypot,
    )
    assert (result.verdict, result.reason) == (verdict, reason)
    assert result.human == (verdict == "human")


def test_bad_addresses_are_no_network_and_never_raise():
    for junk in [None, "", "unknown", "999.1.1.1", "17.0.0.0/8", "::ffff:zz"]:
        assert parse_ip(junk) is None
        assert network_of(junk) is None
    verdict = classify_hit(kind=OPEN, method="GET", user_agent=SAFARI_MAC, ip="not-an-ip")
    assert verdict.reason == "default"


def test_network_table_is_valid_and_each_range_is_found_at_both_ends():
    reasons = {"apple-mpp", "safe-links", "proofpoint", "mimecast", "barracuda"}
    for network in NETWORKS:
        net = ipaddress.ip_network(network.cidr)  # strict: a host bit set would raise
        assert network.reason in reasons
        for address in (net.network_address, net.broadcast_address):
            assert network_of(str(address)) is network
        below = int(net.network_address) - 1
        if below >= 0 and network_of(str(ipaddress.ip_address(below))) is network:
            pytest.fail(f"{network.cidr} matches an address below it")


def clicks(*spec, honeypot_at=()):
    """Clicks of one notification: (seconds, link index) pairs, plus honeypot hits."""
    out = [Click(key=f"c{i}", at=at, index=index) for i, (at, index) in enumerate(spec)]
    out += [
        Click(key=f"h{i}", at=at, index=None, honeypot=True) for i, at in enumerate(honeypot_at)
    ]
    return out


def test_every_link_within_two_seconds_is_a_scanner():
    # Recorded: Defender Safe Links walking a 3-link message 0.3 s apart, 40 s after delivery.
    burst = clicks((40.0, 0), (40.3, 1), (40.6, 2))
    assert burst_reasons(burst, link_count=3) == {"c0": "all-links", "c1": "all-links",
                                                  "c2": "all-links"}  # fmt: skip
    # Every click inside the window goes, repeats included; a click later stays.
    burst = clicks((40.0, 0), (40.1, 0), (40.5, 1), (41.9, 2), (300.0, 1))
    assert burst_reasons(burst, link_count=3) == {
        "c0": "all-links",
        "c1": "all-links",
        "c2": "all-links",
        "c3": "all-links",
    }


@pytest.mark.parametrize(
    "spec",
    [
        # A person: two of three links, seconds apart.
        [(120.0, 0), (125.0, 2)],
        # All three links, but over more than the window.
        [(120.0, 0), (121.0, 1), (120.0 + ALL_LINKS_WINDOW_SECONDS + 0.5, 2)],
        # The same link three times in a second (a double-click and a retry).
        [(120.0, 1), (120.2, 1), (120.4, 1)],
    ],
)
def test_people_are_not_all_links(spec):
    assert burst_reasons(clicks(*spec), link_count=3) == {}


def test_a_single_link_message_cannot_tell_all_links_from_a_person():
    assert burst_reasons(clicks((5.0, 0)), link_count=1) == {}
    assert burst_reasons(clicks((5.0, 0), (5.1, 0)), link_count=1) == {}


def test_honeypot_hit_takes_the_clicks_around_it():
    # Recorded: Mimecast following the honeypot and one real link 4 s apart; the person
    # clicks an hour later.
    spec = clicks((12.0, 1), (3612.0, 0), honeypot_at=[16.0])
    assert burst_reasons(spec, link_count=3) == {"c0": "honeypot-burst"}
    # Within the window on either side, and only there.
    spec = clicks(
        (100.0 - HONEYPOT_WINDOW_SECONDS - 1, 0),
        (100.0 - HONEYPOT_WINDOW_SECONDS, 1),
        (100.0 + HONEYPOT_WINDOW_SECONDS, 2),
        (100.0 + HONEYPOT_WINDOW_SECONDS + 1, 0),
        honeypot_at=[100.0],
    )
    assert burst_reasons(spec, link_count=3) == {"c1": "honeypot-burst", "c2": "honeypot-burst"}


def test_honeypot_outranks_all_links_as_the_reason():
    spec = clicks((50.0, 0), (50.2, 1), (50.4, 2), honeypot_at=[50.1])
    assert set(burst_reasons(spec, link_count=3).values()) == {"honeypot-burst"}
