"""Which network addresses the servers may fetch on a user's behalf (SSRF).

One rule for every outbound fetch of a URL someone typed (the pre-send review's link check,
the callbacks to integrators): a name is fetched only if every address it resolves to is a
public one, so a URL cannot make the servers probe localhost, 10.0.0.5 or the cloud's
metadata address (169.254.169.254).
"""

import ipaddress
import socket


def host_public_addresses(hostname: str, port: int | None = None) -> list[str] | None:
    """The addresses `hostname` resolves to, if every one is public (`is_global`); None if any
    is not, or the name does not resolve. A caller that then connects should connect to one of
    these very addresses (not resolve the name again: a second answer could be another one)."""
    try:
        infos = socket.getaddrinfo(hostname, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError, ValueError):
        return None  # no such host (or a name no resolver takes): nothing to fetch
    addresses = list(dict.fromkeys(info[4][0].partition("%")[0] for info in infos))
    if not addresses or not all(ipaddress.ip_address(a).is_global for a in addresses):
        return None
    return addresses


def host_addresses(hostname: str, port: int | None = None) -> list[str] | None:
    """Every address `hostname` resolves to, public or not (when private targets are allowed);
    None if it does not resolve."""
    try:
        infos = socket.getaddrinfo(hostname, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError, ValueError):
        return None
    return list(dict.fromkeys(info[4][0].partition("%")[0] for info in infos)) or None
