"""Human or machine: a verdict and a short reason for every open and click.

Pure functions over tables (no Django, no I/O), so every rule is tested with recorded traffic
patterns (tests/tracking/hits/test_classify.py) and a new scanner is one row, not a new branch.

Machine means software with no person behind it at that moment; human, that nothing says
machine. What each verdict and reason means: docs/GUIDE.md (Opens and clicks).
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

HUMAN = "human"
MACHINE = "machine"
OPEN = "open"
CLICK = "click"
BOTH = frozenset({OPEN, CLICK})
OPENS = frozenset({OPEN})
CLICKS = frozenset({CLICK})

# Security gateways click while delivering, within a few seconds of the send; a person needs
# the message to arrive, be noticed, opened and read: 10 s is far below that.
FAST_CLICK_SECONDS = 10.0
# Scanners walk every link of a message in well under a second each; a person clicking every
# link of a message within 2 s is not plausible once there are 2 or more links.
ALL_LINKS_WINDOW_SECONDS = 2.0
# A gateway's whole pass over a message (sandbox detonation included) takes seconds to tens
# of seconds; a person clicking within 30 s of a bot's honeypot hit on the same message is
# rare enough that counting such a click as machine costs almost nothing.
HONEYPOT_WINDOW_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Verdict:
    verdict: str  # HUMAN or MACHINE
    reason: str  # a short code, stored in Event.verdict_reason

    @property
    def human(self) -> bool:
        return self.verdict == HUMAN


DEFAULT = Verdict(HUMAN, "default")


@dataclass(frozen=True, slots=True)
class UserAgentRule:
    pattern: re.Pattern[str]
    verdict: Verdict
    kinds: frozenset[str]


def _ua(pattern: str, verdict: str, reason: str, kinds: frozenset[str] = BOTH) -> UserAgentRule:
    return UserAgentRule(re.compile(pattern, re.IGNORECASE), Verdict(verdict, reason), kinds)


# Machine user agents, checked before networks. Substring patterns, case-insensitive.
USER_AGENT_RULES: tuple[UserAgentRule, ...] = (
    # Apple Mail Privacy Protection fetches remote content through Apple's proxies with a bare
    # "Mozilla/5.0" (no platform, no engine): no browser or mail client sends exactly that.
    _ua(r"\AMozilla/5\.0\Z", MACHINE, "apple-mpp", OPENS),
    # Microsoft Defender for Office 365 Safe Links detonation, and Office's own link checks.
    _ua(
        r"SafeLinks|Microsoft-URLAnalyzer|Microsoft Office Existence Discovery|\bms-office\b",
        MACHINE,
        "safe-links",
    ),  # fmt: skip
    _ua(r"Proofpoint|\bppops\b", MACHINE, "proofpoint"),
    _ua(r"Mimecast", MACHINE, "mimecast"),
    _ua(r"Barracuda", MACHINE, "barracuda"),
    # Generic robots and HTTP libraries: a person's mail client or browser is never these.
    _ua(
        r"bot\b|bot/|crawler|spider|\bscanner\b|HeadlessChrome|PhantomJS|python-requests|"
        r"python-urllib|\bcurl/|\bwget/|Go-http-client|okhttp|Apache-HttpClient|\bJava/|"
        r"libwww-perl|node-fetch|axios/|aiohttp",
        MACHINE,
        "bot-ua",
    ),
)
# Human proxies: checked last, after the machine rules and networks.
HUMAN_USER_AGENT_RULES: tuple[UserAgentRule, ...] = (
    # "… (via ggpht.com GoogleImageProxy)": Gmail fetching the pixel as the person opens.
    _ua(r"GoogleImageProxy", HUMAN, "gmail-proxy", OPENS),
    # "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
    _ua(r"YahooMailProxy", HUMAN, "yahoo-proxy", OPENS),
)


@dataclass(frozen=True, slots=True)
class Network:
    cidr: str
    reason: str
    kinds: frozenset[str]
    note: str = ""


# Every network a verdict depends on, in one table. Sources: the vendors' published ranges
# (refresh them from there; nothing else in the code names an address).
NETWORKS: tuple[Network, ...] = (
    # Apple: 17.0.0.0/8 is Apple's own network (AS714), where MPP's prefetches come from;
    # the others are iCloud Private Relay egress ranges (Apple publishes them all at
    # mask-api.icloud.com/egress-ip-ranges.csv), which MPP uses too. Opens only: people
    # browsing with Private Relay click links from the same addresses (Apple asks operators
    # to treat them like carrier-grade NAT), so a click from them proves nothing.
    Network("17.0.0.0/8", "apple-mpp", OPENS, "Apple (AS714)"),
    Network("172.224.0.0/12", "apple-mpp", OPENS, "Private Relay egress (Akamai)"),
    Network("104.28.0.0/16", "apple-mpp", OPENS, "Private Relay egress (Cloudflare)"),
    Network("146.75.0.0/16", "apple-mpp", OPENS, "Private Relay egress (Fastly)"),
    Network("2a02:26f7::/32", "apple-mpp", OPENS, "Private Relay egress (Akamai)"),
    Network("2a09:bac0::/29", "apple-mpp", OPENS, "Private Relay egress (Cloudflare)"),
    Network("2a04:4e41::/32", "apple-mpp", OPENS, "Private Relay egress (Fastly)"),
    # Microsoft 365 Exchange Online Protection, where Defender Safe Links scans come from
    # (Microsoft's "Office 365 URLs and IP address ranges", Exchange Online).
    Network("40.92.0.0/15", "safe-links", BOTH, "Exchange Online Protection"),
    Network("40.107.0.0/16", "safe-links", BOTH, "Exchange Online Protection"),
    Network("52.100.0.0/14", "safe-links", BOTH, "Exchange Online Protection"),
    Network("104.47.0.0/17", "safe-links", BOTH, "Exchange Online Protection"),
    Network("2a01:111:f400::/48", "safe-links", BOTH, "Exchange Online Protection"),
    Network("2a01:111:f403::/48", "safe-links", BOTH, "Exchange Online Protection"),
    # Proofpoint (pphosted.com, Essentials, EU).
    Network("67.231.144.0/20", "proofpoint", BOTH, "Proofpoint"),
    Network("148.163.128.0/19", "proofpoint", BOTH, "Proofpoint (pphosted)"),
    Network("185.132.180.0/22", "proofpoint", BOTH, "Proofpoint EU"),
    # Mimecast (US, UK/EU).
    Network("205.139.110.0/24", "mimecast", BOTH, "Mimecast US"),
    Network("216.205.24.0/24", "mimecast", BOTH, "Mimecast US"),
    Network("207.211.30.0/24", "mimecast", BOTH, "Mimecast US"),
    Network("207.211.31.0/25", "mimecast", BOTH, "Mimecast US"),
    Network("91.220.42.0/24", "mimecast", BOTH, "Mimecast UK"),
    Network("195.130.217.0/24", "mimecast", BOTH, "Mimecast UK"),
    Network("146.101.78.0/24", "mimecast", BOTH, "Mimecast UK"),
    # Barracuda Email Security Service.
    Network("64.235.144.0/20", "barracuda", BOTH, "Barracuda ESS"),
    Network("209.222.80.0/21", "barracuda", BOTH, "Barracuda ESS"),
)


class _NetworkIndex:
    """NETWORKS as sorted integer ranges per IP version: a lookup is one bisect instead of
    testing every network (the flusher classifies thousands of hits a batch)."""

    def __init__(self, networks: Iterable[Network]):
        ranges: dict[int, list[tuple[int, int, Network]]] = {4: [], 6: []}
        for network in networks:
            net = ipaddress.ip_network(network.cidr)
            first, last = int(net.network_address), int(net.broadcast_address)
            ranges[net.version].append((first, last, network))
        self._starts = {}
        self._ranges = {}
        for version, rows in ranges.items():
            rows.sort(key=lambda row: row[0])
            for (_, last, a), (first, _, b) in zip(rows, rows[1:], strict=False):
                if first <= last:
                    raise ValueError(f"overlapping networks {a.cidr} and {b.cidr}")
            self._ranges[version] = rows
            self._starts[version] = [row[0] for row in rows]

    def lookup(self, ip: str | None) -> Network | None:
        address = parse_ip(ip)
        if address is None:
            return None
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        value = int(address)
        rows = self._ranges[address.version]
        i = bisect.bisect_right(self._starts[address.version], value) - 1
        if i >= 0 and rows[i][0] <= value <= rows[i][1]:
            return rows[i][2]
        return None


_NETWORK_INDEX = _NetworkIndex(NETWORKS)


@lru_cache(maxsize=65536)
def parse_ip(ip: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address, or None if it is missing or not an address (never raises)."""
    if not ip:
        return None
    try:
        return ipaddress.ip_address(ip)
    except ValueError:
        return None


def network_of(ip: str | None) -> Network | None:
    """The NETWORKS row an address belongs to, if any."""
    return _NETWORK_INDEX.lookup(ip)


@lru_cache(maxsize=4096)
def _user_agent_verdict(user_agent: str, kind: str, rules_key: str) -> Verdict | None:
    rules = USER_AGENT_RULES if rules_key == MACHINE else HUMAN_USER_AGENT_RULES
    for rule in rules:
        if kind in rule.kinds and rule.pattern.search(user_agent):
            return rule.verdict
    return None


def classify_hit(
    *,
    kind: str,
    method: str,
    user_agent: str,
    ip: str | None,
    seconds_since_send: float | None = None,
    honeypot: bool = False,
) -> Verdict:
    """The verdict on one open (kind=OPEN) or click (kind=CLICK), from what its request shows.

    First match wins, strongest evidence first, so the reason names it: the honeypot link (no
    person can see it), HEAD (never a person's browser), machine user agents, scanner and Apple
    proxy networks, a fast click (gateways scan on arrival), then human user agents (Gmail's
    and Yahoo's image proxies fetch when the person opens, not at delivery; their reason is
    kept so a report can set them apart), else human. `seconds_since_send` is None when the
    send time is unknown (no fast-click rule then).
    """
    if honeypot:
        return Verdict(MACHINE, "honeypot")
    if method.upper() == "HEAD":
        return Verdict(MACHINE, "head")
    user_agent = user_agent.strip()
    if not user_agent:
        # Every browser and mail client sends one; scripts and some scanners do not.
        return Verdict(MACHINE, "no-ua")
    verdict = _user_agent_verdict(user_agent, kind, MACHINE)
    if verdict is not None:
        return verdict
    network = network_of(ip)
    if network is not None and kind in network.kinds:
        return Verdict(MACHINE, network.reason)
    if (
        kind == CLICK
        and seconds_since_send is not None
        and (0 <= seconds_since_send < FAST_CLICK_SECONDS)
    ):
        return Verdict(MACHINE, "fast-click")
    return _user_agent_verdict(user_agent, kind, HUMAN) or DEFAULT


@dataclass(frozen=True, slots=True)
class Click:
    """One click of a notification, for the burst rules."""

    key: Hashable  # the caller's handle on it
    at: float  # seconds (any epoch, the same for all clicks)
    index: int | None  # the link's index; None for the honeypot
    honeypot: bool = False


def burst_reasons(clicks: Sequence[Click], *, link_count: int) -> dict[Hashable, str]:
    """The clicks (of ONE notification) that a burst rule marks as machine: {key: reason}.

    `honeypot-burst`: within HONEYPOT_WINDOW_SECONDS of a honeypot hit (the bot that followed
    the invisible link followed these too); `all-links`: every real link (at least 2) clicked
    within ALL_LINKS_WINDOW_SECONDS (a scanner walking the links). `link_count` is the number of
    real (followable) links of the message. Honeypot hits themselves are not in the result:
    classify_hit already calls them machine.
    """
    reasons: dict[Hashable, str] = {}
    traps = sorted(c.at for c in clicks if c.honeypot)
    real = sorted((c for c in clicks if not c.honeypot), key=lambda c: c.at)
    if traps:
        for click in real:
            i = bisect.bisect_left(traps, click.at)
            near = [traps[j] for j in (i - 1, i) if 0 <= j < len(traps)]
            if any(abs(click.at - t) <= HONEYPOT_WINDOW_SECONDS for t in near):
                reasons[click.key] = "honeypot-burst"
    if link_count >= 2 and len(real) >= link_count:
        # Sliding window over time: whenever the clicks inside ALL_LINKS_WINDOW_SECONDS cover
        # every link, all of them are the scanner's.
        counts: dict[int | None, int] = {}
        start = 0
        for end, click in enumerate(real):
            counts[click.index] = counts.get(click.index, 0) + 1
            while click.at - real[start].at > ALL_LINKS_WINDOW_SECONDS:
                gone = real[start].index
                counts[gone] -= 1
                if not counts[gone]:
                    del counts[gone]
                start += 1
            if len(counts) >= link_count:
                for inside in real[start : end + 1]:
                    reasons.setdefault(inside.key, "all-links")
    return reasons
