"""What every operator command needs: settings, a runtime, or a Redis that is already running."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import redis

from bot.config import Settings, load_settings
from bot.redis_server import RedisConfigError, RedisUnavailable, connect, connect_to, running_url
from bot.yamlfile import ConfigError

if TYPE_CHECKING:
    from bot.act.operator import Operator
    from bot.runtime import Runtime


def settings_or_exit() -> Settings:
    """The settings, or exit with the config error."""
    try:
        return load_settings()
    except ConfigError as exc:
        raise SystemExit(f"config error: {exc}") from None


def runtime_or_exit(settings: Settings, **kw: Any) -> Runtime:
    """A started runtime (bot.runtime.start), or exit saying why it cannot start; only `serve` and
    `worker` load the classifier at start (the others, if at all, on first use)."""
    from bot.runtime import StartError, start

    kw.setdefault("lazy_classifier", True)
    try:
        return start(settings, **kw)
    except RedisConfigError as exc:
        raise SystemExit(f"cannot start: {exc}") from None
    except RedisUnavailable as exc:
        what = ("start that Redis, or unset REDIS_URL for the embedded one" if settings.external_redis
                else "check var/redis, or set REDIS_URL to a running Redis")
        raise SystemExit(f"cannot start: {exc} ({what})") from None
    except (ConfigError, StartError) as exc:
        raise SystemExit(f"cannot start: {exc}") from None


def existing_redis(settings: Settings) -> redis.Redis | None:
    """REDIS_URL, else the embedded server if one is running; never starts one (a preview must not)."""
    if settings.external_redis:
        try:
            return connect_to(settings)
        except RedisUnavailable:
            return None
    url = running_url(settings.embedded_redis_dir)
    try:
        return connect(url) if url else None
    except RedisUnavailable:
        return None


def cli_user() -> str:
    """Who acts from the command line, as events record it: cli:<os user>."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


def operator(rt: Runtime) -> Operator:
    """Operator actions (bot/act/operator.py) over the runtime's Redis, acting on WeCom through its staff."""
    from datetime import datetime

    from bot.act.operator import Operator

    return Operator(rt.r, lambda: rt.parts().staff, lambda: datetime.now(rt.settings.timezone), rt.inbox)
