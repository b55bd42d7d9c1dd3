# One image for every orderengine service of docker-compose.yml: migrate, api (gunicorn) and worker.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the engine runs: not .venv, var/, tests or a developer's .env from the build context.
COPY setup.cfg pyproject.toml README.md wsgi.py huey_consumer.py gunicorn.conf.py ./
COPY orderengine/ orderengine/
COPY venues/ venues/
COPY migrations/ migrations/

# Editable on purpose: `orderengine migrate` looks for Alembic's scripts next to the package
# (orderengine/migrate.py, MIGRATIONS_DIR = <package>/../migrations), and the wheel that a plain
# `pip install .` builds does not contain migrations/. No dev extra: no test tools in the image.
RUN pip install -e . \
    && useradd --system --uid 10001 --home-dir /app orderengine \
    && mkdir -p /app/var && chown orderengine /app/var

USER orderengine
EXPOSE 3000
CMD ["gunicorn", "wsgi:app", "-c", "gunicorn.conf.py"]
