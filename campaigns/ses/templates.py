"""Direct SES v2 calls that anymail does not make: stored templates and the account's quota.

Sends go through anymail (campaigns.delivery); these share its region and client config, and
boto3 resolves the endpoint itself (AWS_ENDPOINT_URL_SESV2 reaches any SES-compatible server).
"""

import functools
import logging

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from django.conf import settings

logger = logging.getLogger(__name__)


@functools.cache
def ses_client():
    # boto3 clients are thread-safe; one per process saves ~50 ms of set-up per call.
    session = boto3.session.Session(region_name=settings.AWS_SES_REGION)
    return session.client("sesv2", config=Config(**settings.SES_CLIENT_CONFIG))


def ses_template_ensure(*, name: str, subject: str, html: str, text: str) -> None:
    """Create the stored template `name` unless it exists.

    Names are immutable per content (they carry a hash of it), so an existing template of that
    name already holds this content: creating it twice, as a retried task does, is harmless.
    """
    content = {"Subject": subject, "Html": html}
    if text:
        content["Text"] = text
    try:
        ses_client().create_email_template(TemplateName=name, TemplateContent=content)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != "AlreadyExistsException":
            raise
    logger.info("ses template ready name=%s", name)
