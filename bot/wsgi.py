"""WSGI entry for any server: `gunicorn bot.wsgi:app` (needs REDIS_URL and WECOM_* in the environment)."""

from bot.config import load_settings
from bot.runtime import production_app

app = production_app(load_settings())
