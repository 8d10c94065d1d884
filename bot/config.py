"""Settings: config.yaml for structure, the environment for secrets and overrides; checked once at start."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot import yamlfile
from bot.yamlfile import ConfigError, KeyPath
from sop.plan import Rules

DEFAULT_API_BASE = "https://qyapi.weixin.qq.com/cgi-bin/"

# Fixed credentials of the local sandbox; never valid on a real corp.
SANDBOX_CORP_ID = "wwsandbox0000000001"
SANDBOX_SECRET = "sandbox-secret"
SANDBOX_TOKEN = "SandboxToken2024"
SANDBOX_AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
SANDBOX_AGENT_ID = 1000002
SANDBOX_OPEN_KFID = "wkSandboxKf0000000000000000000001"

DEFAULT_REPLIES = {
    "default": "您好，已收到您的消息，我们会尽快回复您。",
    "handoff": "好的，已为您安排专属顾问，顾问会尽快联系您，请稍候～",
    "complaint": "非常抱歉给您带来不好的体验！已为您优先转接顾问处理，请稍候。",
    "unsubscribe": "已为您退订，之后不会再给您推送活动消息。",
    "unsupported": "抱歉，我暂时只能看懂文字消息，请用文字描述一下您的问题。",
}

AES_KEY_RE = re.compile(r"[A-Za-z0-9]{43}")


def aes_key_problem(key: str) -> str | None:
    """What is wrong with an EncodingAESKey (43 letters or digits), naming the bad character; None if fine."""
    if AES_KEY_RE.fullmatch(key):
        return None
    bad = next((f"{c!r} at position {i + 1}" for i, c in enumerate(key) if not (c.isascii() and c.isalnum())), None)
    if bad:
        return f"the EncodingAESKey may hold only letters and digits; it has {bad}"
    return f"the EncodingAESKey must be exactly 43 letters or digits, got {len(key)} characters"
TOKEN_RE = re.compile(r"[A-Za-z0-9]{1,32}")


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How workers read the inbox."""

    claim_idle_seconds: float = 30.0
    max_attempts: int = 5
    batch: int = 32
    block_ms: int = 1000
    inbox_shards: int = 0  # inbox streams; 0: 1 on a standalone server or sentinel master, 16 on a cluster


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a process needs, validated."""

    corp_id: str
    agent_id: int
    secret: str | None
    token: str
    aes_key: str
    api_base_url: str
    redis_url: str | None
    timezone: ZoneInfo
    config_path: Path
    root: Path
    callback_path: str = "/wecom/callback"
    max_body_bytes: int = 65536
    max_clock_skew_seconds: int = 300
    http_timeout_seconds: float = 5.0
    embedded_redis_dir: Path = Path("var/redis")
    replies: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_REPLIES))
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    content: Mapping[str, Path] = field(default_factory=dict)
    api_token: str | None = None
    admin_token: str | None = None  # the console's login token (WECOM_BOT_ADMIN_TOKEN; sandbox: one per run)
    metrics_token: str | None = None  # /metrics needs it as a bearer token (WECOM_BOT_METRICS_TOKEN)
    corp_tags: Mapping[str, str] = field(default_factory=dict)
    sop_rules: Rules = field(default_factory=Rules)  # config.yaml `sop:`
    redis_sentinels: str = ""  # REDIS_SENTINELS: host:port,host:port (then REDIS_URL only gives password and db)
    redis_sentinel_master: str = ""  # REDIS_SENTINEL_MASTER: the name the sentinels monitor

    @property
    def external_redis(self) -> bool:
        """A Redis of the operator's (REDIS_URL or sentinels), not the embedded one."""
        return bool(self.redis_url or self.redis_sentinels)

    @property
    def sandbox(self) -> bool:
        """No WECOM_SECRET: run against the built-in sandbox."""
        return self.secret is None

    def with_api_base(self, url: str) -> Settings:
        """A copy pointing every WeCom call at `url`."""
        return replace(self, api_base_url=url if url.endswith("/") else url + "/")


def _get(doc: yamlfile.Doc, keypath: KeyPath, default: Any = None) -> Any:
    node: Any = doc.data or {}
    for part in keypath:
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return default if node is None else node


def _check_keys(doc: yamlfile.Doc, keypath: KeyPath, allowed: set[str]) -> None:
    node = _get(doc, keypath, {})
    if not isinstance(node, dict):
        raise doc.error(keypath, "must be a mapping")
    for key in node:
        if key not in allowed:
            raise doc.error((*keypath, str(key)), f"unknown key (allowed: {', '.join(sorted(allowed))})")


SCHEMA: dict[KeyPath, set[str]] = {
    (): {"wecom", "callback", "redis", "timezone", "worker", "replies", "content", "corp_tags", "sop"},
    ("wecom",): {"corp_id", "agent_id", "api_base_url", "http_timeout_seconds"},
    ("callback",): {"path", "max_body_bytes", "max_clock_skew_seconds"},
    ("redis",): {"url", "embedded_dir"},
    ("worker",): {"claim_idle_seconds", "max_attempts", "batch", "block_ms", "inbox_shards"},
    ("sop",): {"quiet_hours", "daily_cap", "ignored_limit"},
    ("replies",): set(DEFAULT_REPLIES),
}


def _number(doc: yamlfile.Doc, keypath: KeyPath, default: float, kind: type = int, minimum: float = 0) -> Any:
    value = yamlfile.number(doc, keypath, _get(doc, keypath, default), minimum=minimum, whole=kind is int)
    return kind(value)


def _sop_rules(doc: yamlfile.Doc) -> Rules:
    """The `sop:` section: quiet hours, daily cap and ignored-N over all journeys (defaults: sop.plan.Rules)."""
    rules = Rules()
    quiet_start, quiet_end = rules.quiet_start, rules.quiet_end
    quiet = _get(doc, ("sop", "quiet_hours"), None)
    if quiet is not None:
        parts = quiet.split("-") if isinstance(quiet, str) else []
        times = [t for t in (yamlfile.time_of_day(p) for p in parts) if t is not None]
        if len(parts) != 2 or len(times) != 2 or times[0] == times[1]:
            raise doc.error(("sop", "quiet_hours"),
                            f'expected a window like "22:00-08:00", got {yamlfile.shown(quiet)}')
        quiet_start, quiet_end = times
    return replace(rules, quiet_start=quiet_start, quiet_end=quiet_end,
                   daily_cap=_number(doc, ("sop", "daily_cap"), rules.daily_cap, int, 1),
                   ignored_limit=_number(doc, ("sop", "ignored_limit"), rules.ignored_limit, int, 1))


def load_settings(path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read config.yaml (or WECOM_BOT_CONFIG) and the environment; raise ConfigError on the first problem."""
    env = os.environ if environ is None else environ
    path = Path(path or env.get("WECOM_BOT_CONFIG") or "config.yaml")
    doc = yamlfile.load(path)
    if doc.data is not None and not isinstance(doc.data, dict):
        raise doc.error((), "must be a mapping")
    for keypath, allowed in SCHEMA.items():
        _check_keys(doc, keypath, allowed)
    root = path.resolve().parent

    def env_or(name: str, keypath: KeyPath | None, default: Any = None) -> tuple[Any, str]:
        if env.get(name):
            return env[name], f"{name} (environment)"
        where = f"{path}:{doc.line(keypath)}: {yamlfile.render_path(keypath)}" if keypath else name
        return (_get(doc, keypath, default) if keypath else default), where

    secret = env.get("WECOM_SECRET") or None
    if env.get("WECOM_AES_KEY"):  # checked in every mode: a key typed wrong is never silently ignored
        problem = aes_key_problem(env["WECOM_AES_KEY"])
        if problem:
            raise ConfigError(f"WECOM_AES_KEY (environment): {problem}"
                              + ("; in sandbox mode (no WECOM_SECRET) it is not used: unset it or fix it"
                                 if secret is None else ""))
    if secret is None:
        corp_id, token, aes_key = SANDBOX_CORP_ID, SANDBOX_TOKEN, SANDBOX_AES_KEY
        agent_id: Any = SANDBOX_AGENT_ID
        agent_where = "sandbox"
    else:
        corp_id, where = env_or("WECOM_CORP_ID", ("wecom", "corp_id"), "")
        if not isinstance(corp_id, str) or not corp_id.strip():
            raise ConfigError(f"{where}: the CorpID is required when WECOM_SECRET is set")
        token, where = env_or("WECOM_TOKEN", None, "")
        if not TOKEN_RE.fullmatch(str(token)):
            raise ConfigError(f"{where}: the callback Token must be 1-32 letters or digits")
        aes_key, where = env_or("WECOM_AES_KEY", None, "")
        problem = aes_key_problem(str(aes_key))
        if problem:
            raise ConfigError(f"{where}: {problem}")
        agent_id, agent_where = env_or("WECOM_AGENT_ID", ("wecom", "agent_id"), None)
    try:
        agent_id = int(agent_id)
    except (TypeError, ValueError):
        raise ConfigError(f"{agent_where}: AgentID must be an integer, got {agent_id!r}") from None

    base, where = env_or("WECOM_API_BASE_URL", ("wecom", "api_base_url"), DEFAULT_API_BASE)
    if not re.match(r"https?://[^/]+", str(base)):
        raise ConfigError(f"{where}: must be an http(s) URL, got {base!r}")
    redis_url, where = env_or("REDIS_URL", ("redis", "url"), "")
    if redis_url and not re.match(r"(redis|rediss|unix)://", str(redis_url)):
        raise ConfigError(f"{where}: must start with redis://, rediss:// or unix://, got {redis_url!r}")
    sentinels = str(env.get("REDIS_SENTINELS") or "").strip()
    sentinel_master = str(env.get("REDIS_SENTINEL_MASTER") or "").strip()
    if sentinels and not re.fullmatch(r"[^,:\s]+:\d+(\s*,\s*[^,:\s]+:\d+)*", sentinels):
        raise ConfigError(f"REDIS_SENTINELS (environment): must be host:port[,host:port...], got {sentinels!r}")
    if sentinels and not sentinel_master:
        raise ConfigError("REDIS_SENTINEL_MASTER (environment): must name the monitored master when "
                          "REDIS_SENTINELS is set")
    tz_name, where = env_or("WECOM_BOT_TIMEZONE", ("timezone",), "Asia/Shanghai")
    try:
        tz = ZoneInfo(str(tz_name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}: unknown timezone {tz_name!r} (e.g. Asia/Shanghai)") from None

    cb_path = _get(doc, ("callback", "path"), "/wecom/callback")
    if not isinstance(cb_path, str) or not cb_path.startswith("/"):
        raise doc.error(("callback", "path"), "must be a URL path starting with /")
    replies = dict(DEFAULT_REPLIES)
    for name in DEFAULT_REPLIES:
        text = _get(doc, ("replies", name), DEFAULT_REPLIES[name])
        if not isinstance(text, str) or not text.strip():
            raise doc.error(("replies", name), "must be a non-empty text")
        replies[name] = text
    content = _get(doc, ("content",), {})
    if not isinstance(content, dict) or not all(isinstance(v, str) for v in content.values()):
        raise doc.error(("content",), "must map names to file paths")
    corp_tags = _get(doc, ("corp_tags",), {})
    if not isinstance(corp_tags, dict) or not all(isinstance(v, str) and v for v in corp_tags.values()):
        raise doc.error(("corp_tags",), "must map our tag names to WeCom corp tag ids (text)")
    worker = WorkerSettings(
        claim_idle_seconds=_number(doc, ("worker", "claim_idle_seconds"), 30, float, 0.1),
        max_attempts=_number(doc, ("worker", "max_attempts"), 5, int, 1),
        batch=_number(doc, ("worker", "batch"), 32, int, 1),
        block_ms=_number(doc, ("worker", "block_ms"), 1000, int, 1),
        inbox_shards=_number(doc, ("worker", "inbox_shards"), 0, int, 0),
    )
    return Settings(
        corp_id=str(corp_id).strip(), agent_id=agent_id, secret=secret, token=str(token),
        aes_key=str(aes_key), api_base_url=str(base) if str(base).endswith("/") else f"{base}/",
        redis_url=str(redis_url) or None, timezone=tz, config_path=path, root=root,
        callback_path=cb_path,
        max_body_bytes=_number(doc, ("callback", "max_body_bytes"), 65536, int, 1024),
        max_clock_skew_seconds=_number(doc, ("callback", "max_clock_skew_seconds"), 300, int, 1),
        http_timeout_seconds=_number(doc, ("wecom", "http_timeout_seconds"), 5, float, 0.1),
        embedded_redis_dir=root / str(_get(doc, ("redis", "embedded_dir"), "var/redis")),
        replies=replies, worker=worker,
        content={name: root / p for name, p in content.items()},
        api_token=env.get("WECOM_BOT_API_TOKEN") or None,
        admin_token=env.get("WECOM_BOT_ADMIN_TOKEN") or None,
        metrics_token=env.get("WECOM_BOT_METRICS_TOKEN") or None,
        corp_tags={str(k): v for k, v in corp_tags.items()},
        sop_rules=_sop_rules(doc),
        redis_sentinels=sentinels, redis_sentinel_master=sentinel_master,
    )
