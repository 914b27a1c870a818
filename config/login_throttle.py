"""What django-axes counts failed logins by (config/settings/login.py)."""

from django.conf import settings
from django.http import HttpRequest

# axes stores the username in a varchar(255), and Django authenticates usernames of any length
# (the login form's 150 is only a widget attribute): a longer one failed the login with a 500.
_STORED_LENGTH = 255


def attempted_username(request: HttpRequest, credentials: dict | None) -> str | None:
    """The username tried (as axes reads it by default), cut to what axes can store. Longer
    names belong to no account, so cutting them merges nothing but such guesses."""
    field = settings.AXES_USERNAME_FORM_FIELD
    if credentials:
        username = credentials.get(field)
    else:
        username = getattr(request, "data", request.POST).get(field)
    return username[:_STORED_LENGTH] if isinstance(username, str) else username
