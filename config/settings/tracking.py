"""Tracking: where the open pixel and click links in sent messages point."""

from config.env import env_str

# Public base URL of this installation, as recipients' mail clients will reach it (no trailing
# slash). Baked into every sent message's links, so it must be right before the first send.
TRACKING_BASE_URL = env_str("TRACKING_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
