import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_wsgi_application()

# The open pixel and click redirect skip Django's URL resolver and middleware (they need
# neither, and they are most of the traffic): see tracking.hits.views.tracking_wsgi.
from campaigns.api.direct import messages_wsgi  # noqa: E402
from tracking.hits.views import tracking_wsgi  # noqa: E402 (needs Django set up)
from tracking.ses_events.webhook import ses_webhook_wsgi  # noqa: E402

# SNS notifications to the SES webhook skip them too: see
# tracking.ses_events.webhook.ses_webhook_wsgi; and POST /api/v1/messages with a key: see
# campaigns.api.direct.
application = ses_webhook_wsgi(tracking_wsgi(messages_wsgi(django_application)))
