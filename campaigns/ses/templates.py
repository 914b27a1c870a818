"""SES stored templates: the one a campaign sends with, created as it starts."""

import logging

from campaigns.ses.clients import ses_client

logger = logging.getLogger(__name__)


def ses_template_ensure(*, name: str, subject: str, html: str, text: str) -> None:
    """Create the stored template `name` unless it exists (SesError if SES refuses it).

    Names are immutable per content (they carry a hash of it), so an existing template of that
    name already holds this content: creating it twice, as a retried task does, is harmless.
    """
    ses_client().template_create(name=name, subject=subject, html=html, text=text)
    logger.info("ses template ready name=%s", name)
