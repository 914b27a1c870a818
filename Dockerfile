# The application image: web (granian), worker and beat run from it with different commands.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config config
COPY campaigns campaigns
COPY templates_app templates_app
COPY tracking tracking
COPY infra infra
COPY static static
COPY manage.py ./
RUN pip install . \
    && DJANGO_SECRET_KEY=build-only python manage.py collectstatic --noinput \
    && useradd --system --uid 10001 app
USER app
EXPOSE 8000
# The web server, configured through its environment variables so `docker run … granian
# config.wsgi:application` and docker-compose.yml start it the same way. Two workers (one per
# core of the 2-core reference machine), each with 16 threads for Django, so a slow admin page
# does not hold up pixels and redirects, and a process has enough message POSTs in flight to
# share their statements (group commit: docs/PERFORMANCE.md). Collected static files (the admin's, the report's
# chart) are served by granian itself. No access log: tracking and unsubscribe URLs carry
# tokens. A worker that dies is started again.
ENV GRANIAN_INTERFACE=wsgi GRANIAN_HOST=0.0.0.0 GRANIAN_PORT=8000 \
    GRANIAN_WORKERS=2 GRANIAN_BLOCKING_THREADS=16 \
    GRANIAN_STATIC_PATH_ROUTE=/static GRANIAN_STATIC_PATH_MOUNT=/app/staticfiles \
    GRANIAN_RESPAWN_FAILED_WORKERS=true
CMD ["granian", "config.wsgi:application"]
