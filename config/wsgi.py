import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_wsgi_application()

# The open pixel and click redirect skip Django's URL resolver and middleware (they need
# neither, and they are most of the traffic): see tracking.views.tracking_wsgi.
from tracking.views import tracking_wsgi  # noqa: E402 (needs Django set up)

application = tracking_wsgi(django_application)
