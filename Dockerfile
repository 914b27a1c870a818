# The application image: web (gunicorn), worker and beat run from it with different commands.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config config
COPY campaigns campaigns
COPY templates_app templates_app
COPY tracking tracking
COPY seslocal seslocal
COPY static static
COPY manage.py ./
RUN pip install . \
    && DJANGO_SECRET_KEY=build-only python manage.py collectstatic --noinput \
    && useradd --system --uid 10001 app
USER app
EXPOSE 8000
CMD ["gunicorn", "config.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3"]
