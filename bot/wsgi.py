"""WSGI entry for any server: `gunicorn bot.wsgi:app` (needs REDIS_URL and WECOM_* in the environment)."""

from bot.app import production_app
from bot.config import load_settings

app = production_app(load_settings())
