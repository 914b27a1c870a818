"""System checks for tracking settings (`manage.py check --deploy` shows them)."""

from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.security, deploy=True)
def tracking_base_url_is_https(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """RFC 8058 one-click unsubscribe is honoured by mail providers only for https URIs, and
    every sent message's pixel and links are baked from TRACKING_BASE_URL."""
    if settings.TRACKING_BASE_URL.startswith("https://"):
        return []
    return [
        checks.Warning(
            "TRACKING_BASE_URL is not https: mail providers ignore one-click unsubscribe "
            "(RFC 8058) for http links, and recipients' clients may block mixed content.",
            hint="Set TRACKING_BASE_URL to this site's public https:// URL.",
            id="tracking.W001",
        )
    ]
