"""The production WSGI entry point: `gunicorn wsgi:app -c gunicorn.conf.py`."""
from orderengine.app import create_app
from orderengine.config import load_settings
from orderengine.logs import configure_logging

settings = load_settings()
configure_logging(settings.log_level)
app = create_app(settings)
