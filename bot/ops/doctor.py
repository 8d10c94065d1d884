"""`wecom-bot doctor`: check the set-up (config, Redis, WeCom credentials, kf account, servicers, time) and say what to fix."""

from __future__ import annotations

import email.utils
import time
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import redis

from bot.config import (
    DEFAULT_API_BASE,
    SANDBOX_CORP_ID,
    SANDBOX_OPEN_KFID,
    SANDBOX_SECRET,
    Settings,
)
from bot.queue.scheduler import leadership
from bot.records.store import Store
from bot.redis_server import (
    RedisConfigError,
    RedisUnavailable,
    connect,
    redact,
    running_url,
    topology,
)
from bot.wecom import CONFIG_HINTS
from bot.wecom.probe import Probe

EXTRA_HINTS = {
    41002: "the CorpID is empty: set WECOM_CORP_ID (我的企业 -> 企业信息 -> 企业ID)",
    41004: "the secret is empty: set WECOM_SECRET (应用管理 -> your app -> Secret)",
    40056: "the open_kfid is not valid for this corp: check the kf account under 微信客服",
    95000: "the kf account does not exist or is not bound to this app: 微信客服 -> 可调用接口的应用",
}
KF_NOT_BOUND = {48002, 95000, 60011}


class Report:
    """Collects check results and prints them as it goes."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.failed = 0
        self.warned = 0

    def ok(self, what: str) -> None:
        print(f"[ok]   {what}", file=self.out)

    def warn(self, what: str, fix: str = "") -> None:
        self.warned += 1
        print(f"[warn] {what}" + (f"\n       fix: {fix}" if fix else ""), file=self.out)

    def fail(self, what: str, fix: str) -> None:
        self.failed += 1
        print(f"[FAIL] {what}\n       fix: {fix}", file=self.out)

    def info(self, what: str) -> None:
        print(f"       {what}", file=self.out)


def hint(errcode: int | None) -> str:
    """What to do about a WeCom errcode."""
    known = CONFIG_HINTS.get(errcode) or EXTRA_HINTS.get(errcode) if errcode is not None else None
    return known or \
        f"see https://developer.work.weixin.qq.com/devtool/query?e={errcode}"


def run_doctor(settings: Settings, out: TextIO, open_kfids: list[str] | None = None) -> int:
    """Run every check, print what to fix; 0 when all is well, 1 otherwise."""
    rep = Report(out)
    print("wecom-bot doctor", file=out)
    check_config(settings, rep)
    r = check_redis(settings, rep)
    check_kf_pulls(r, rep)
    check_scheduler(r, rep)
    if settings.sandbox and settings.api_base_url == DEFAULT_API_BASE:
        rep.ok("sandbox mode (WECOM_SECRET unset): `wecom-bot serve` runs its own fake WeCom; WeCom checks skipped")
    else:
        token = check_token(settings, rep)
        if token:
            check_kf(settings, rep, token, _kfids(settings, r, open_kfids))
    check_time(settings, rep)
    if rep.failed:
        print(f"\n{rep.failed} problem(s) to fix" + (f", {rep.warned} warning(s)" if rep.warned else ""), file=out)
        return 1
    print("\nall checks passed" + (f" ({rep.warned} warning(s))" if rep.warned else ""), file=out)
    return 0


def check_config(settings: Settings, rep: Report) -> None:
    """The loaded settings and the operator files they name."""
    from bot.web.metrics import config_problems

    problems = config_problems(settings)
    for p in problems:
        rep.fail(f"config: {p}", "set the variable (see README, Configuration)")
    if not problems:
        if settings.sandbox and settings.api_base_url == DEFAULT_API_BASE:  # serve points the client at its sandbox
            where = "sandbox mode: the API is the local sandbox `serve` starts"
        else:
            mode = "sandbox" if settings.sandbox else f"corp {settings.corp_id}, agent {settings.agent_id}"
            where = f"{mode}; API base {settings.api_base_url}"
        rep.ok(f"config {settings.config_path} ({where})")
    failed = False
    for name, loader in (("coupons", _load_coupons), ("consultants", _load_team), ("journeys", _load_journeys),
                         ("keywords", _load_keywords), ("faq", _load_faq), ("dialect", _load_dialect),
                         ("examples", _load_examples)):
        path = (settings.content or {}).get(name)
        if not path:
            continue
        try:
            loader(settings, path)
        except Exception as exc:  # each loader raises ConfigError naming file, line and key
            failed = True
            rep.fail(f"content {name}: {exc}", f"edit {path} (the message names the line and key)")
        else:
            rep.ok(f"content {name}: {path}")
    team_path = (settings.content or {}).get("consultants")
    if team_path and not failed:
        from bot.content.team import load_team

        team = load_team(team_path, settings.timezone)
        if not any(c.supervisor for c in team.consultants) and not team.robot_key():
            rep.warn("content consultants: no consultant names a supervisor and no team robot is set: a chat left "
                     "unanswered could reach nobody past its consultant",
                     f"edit {team_path} (supervisor:) or set WECOM_ROBOT_KEY")
    if (settings.content or {}).get("keywords") and not failed:
        try:
            from intents.cli import from_content

            from_content(settings.content)
        except Exception as exc:  # noqa: BLE001 - the model could not be trained from these files
            rep.fail(f"intent router: {exc}", "fix the file the message names, then run doctor again")
        else:
            rep.ok("intent router: keywords, FAQ, dialect map and the trained model load")


def _load_coupons(settings: Settings, path: Path) -> None:
    from bot.content.campaigns import load_campaigns

    load_campaigns(path, settings.timezone)


def _load_team(settings: Settings, path: Path) -> None:
    from bot.content.team import load_team

    load_team(path, settings.timezone)


def _load_journeys(settings: Settings, path: Path) -> None:
    from sop import journeys

    errors = journeys.load_dir(path)[1]
    if errors:
        raise ValueError("; ".join(str(e) for e in errors[:5]) + (f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""))


def _load_keywords(settings: Settings, path: Path) -> None:
    from intents.config import load_keywords

    load_keywords(path)


def _load_faq(settings: Settings, path: Path) -> None:
    from intents.config import load_faq

    load_faq(path)


def _load_dialect(settings: Settings, path: Path) -> None:
    from intents.config import load_dialect

    load_dialect(path)


def _load_examples(settings: Settings, path: Path) -> None:
    from intents.examples import read_corpus

    read_corpus(path)


def check_redis(settings: Settings, rep: Report) -> redis.Redis | None:
    """REDIS_URL (or the sentinels) answers, in which mode and with how many nodes (or say how the embedded one
    is used)."""
    url = settings.redis_url
    if not settings.external_redis:
        url = running_url(Path(settings.embedded_redis_dir))
        if url is None:
            rep.ok("Redis: REDIS_URL unset; `wecom-bot serve` starts an embedded one "
                   "(separate web/worker/scheduler processes need REDIS_URL)")
            return None
    where = f"Redis master {settings.redis_sentinel_master!r}" if settings.redis_sentinels else \
        f"Redis at {redact(url or '')}"
    try:
        client = connect(url, sentinels=settings.redis_sentinels, master=settings.redis_sentinel_master)
        info = client.info("server")
    except RedisConfigError as exc:
        rep.fail(str(exc), "correct REDIS_URL / REDIS_SENTINELS / REDIS_SENTINEL_MASTER")
        return None
    except (RedisUnavailable, redis.RedisError) as exc:
        rep.fail(f"{where} is unreachable: {exc}",
                 "start Redis there, or correct REDIS_URL (host, port, password, database); "
                 "check firewalls and that Redis listens on that address")
        return None
    version = str(info.get("redis_version", "?"))
    if tuple(int(x) for x in version.split(".")[:2] if x.isdigit()) < (7, 0):
        rep.fail(f"{where} is version {version}", "use Redis >= 7.0, or Valkey (SET NX GET, XAUTOCLAIM)")
    else:
        rep.ok(f"{where} answers (version {version})")
    shape = topology(client)
    what = {"cluster": "cluster nodes", "sentinel": "sentinels", "standalone": "server"}[shape["mode"]]
    line = f"Redis mode: {shape['mode']}, {shape['answering']} of {shape['nodes']} {what} answer" + \
        (f", master {shape['master']}" if shape.get("master") else "")
    if shape["answering"] < shape["nodes"]:
        rep.warn(line, "a node does not answer: the service goes on while the rest hold, but bring it back")
    else:
        rep.ok(line)
    return client


def check_scheduler(r: redis.Redis | None, rep: Report) -> None:
    """Which scheduler is active (the lease holder names host and pid), since when; none is a warning."""
    if r is None:
        return
    try:
        leads = leadership(r)
    except redis.RedisError:
        return
    taken = leads["last_takeover"]
    since = f", since {taken['at'][:19].replace('T', ' ')} UTC" if taken and taken["holder"] == leads["active"] else ""
    if leads["active"]:
        rep.ok(f"scheduler: {leads['active']} is active (epoch {leads['epoch']}{since})")
    else:
        rep.warn("scheduler: none is active (no lease holder): touches, SLA escalations and kf sweeps wait",
                 "start `uv run wecom-bot scheduler` (or `serve`)")


def check_kf_pulls(r: redis.Redis | None, rep: Report) -> None:
    """No kf account whose last kf_msg_or_event notices in a row pulled nothing (bot/queue/kfsync.py)."""
    if r is None:
        return
    from bot.queue.kfsync import stall_reports

    try:
        stalled = stall_reports(Store(r))
    except redis.RedisError:
        return
    for what, fix in stalled:
        rep.fail(what, fix)
    if not stalled:
        rep.ok("kf pulls: no kf account has had notices in a row that pulled nothing")


def _probe(settings: Settings) -> Probe:
    return Probe(settings.api_base_url, settings.http_timeout_seconds, settings.secret)


def check_token(settings: Settings, rep: Report) -> str | None:
    """gettoken with the configured CorpID and secret (never printed)."""
    data, error, resp = _probe(settings).gettoken(
        settings.corp_id, settings.secret or (SANDBOX_SECRET if settings.sandbox else ""))
    if data is None:
        rep.fail(f"access token: {error}", "check outbound HTTPS from this server (proxy, DNS, firewall) "
                                           "and WECOM_API_BASE_URL")
        return None
    _clock_from(resp, rep)
    code = data.get("errcode") or 0
    if code or not data.get("access_token"):
        rep.fail(f"access token: gettoken answered errcode {code}: {data.get('errmsg', '')}", hint(code))
        return None
    rep.ok("access token: gettoken accepted the CorpID and secret")
    return str(data["access_token"])


def _kfids(settings: Settings, r: redis.Redis | None, given: list[str] | None) -> list[str]:
    """kf accounts to check when kf/account/list is unavailable: given, seen by workers, the sandbox's."""
    ids = list(given or [])
    if r is not None:
        try:
            ids += Store(r).kf_accounts()
        except redis.RedisError:
            pass
    if settings.corp_id == SANDBOX_CORP_ID:
        ids.append(SANDBOX_OPEN_KFID)
    return list(dict.fromkeys(ids))


def check_kf(settings: Settings, rep: Report, token: str, known: list[str]) -> None:
    """A kf account is bound to the app, it has servicers receiving (接待中), and its servicers and the
    consultants of content/consultants.yaml are the same people (either side may lack some)."""
    data, error, _ = _probe(settings).kf_accounts(token)
    accounts = known
    if data is not None and not data.get("errcode"):
        accounts = [a["open_kfid"] for a in data.get("account_list") or [] if a.get("open_kfid")]
        if not accounts:
            rep.fail("kf: the app sees no 微信客服 account",
                     "bind the app under 微信客服 -> API -> 可调用接口的应用, or create a kf account")
            return
    elif data is not None and data.get("errcode") in KF_NOT_BOUND:
        rep.fail(f"kf: kf/account/list answered errcode {data['errcode']}: {data.get('errmsg', '')}",
                 "bind the app under 微信客服 -> API -> 可调用接口的应用")
        return
    elif not accounts:
        rep.warn(f"kf: cannot list kf accounts ({error or data}) and none is known yet",
                 "bind the app to the kf account; the worker records accounts as callbacks arrive")
        return
    from bot.content.team import DEFAULT_MAX_CONCURRENT

    consultants = _consultant_ids(settings)
    for kfid in accounts:
        data, error, _ = _probe(settings).kf_servicers(token, kfid)
        if data is None or data.get("errcode"):
            code = data.get("errcode") if data else None
            rep.fail(f"kf {kfid}: servicer/list failed: {error or (data or {}).get('errmsg')} (errcode {code})",
                     hint(code) if code else "check the network to WeCom")
            continue
        servicers = {s.get("userid"): s.get("status") for s in data.get("servicer_list") or [] if s.get("userid")}
        receiving = sorted(u for u, st in servicers.items() if st == 0)
        if not receiving:
            rep.fail(f"kf {kfid}: bound, but no servicer is receiving (接待中): {sorted(servicers) or 'none listed'}",
                     "add your consultants as 接待人员 of the kf account and have them switch to 接待中 "
                     "in the WeCom client; otherwise handoffs wait in the queue")
        else:
            rep.ok(f"kf {kfid}: bound; receiving servicers: {', '.join(receiving)}")
        missing = sorted(set(consultants) - set(servicers))
        if missing:
            rep.warn(f"kf {kfid}: consultants not servicers of this account: {', '.join(missing)}",
                     "add them as 接待人员 (微信客服 -> the account -> 接待人员), or remove them from content/consultants.yaml")
        unlisted = sorted(set(servicers) - set(consultants)) if consultants else []  # no team: no handoffs
        for userid in unlisted:
            rep.warn(f"kf {kfid}: 接待人员 {userid} 不在 consultants.yaml：将按默认设置分配",
                     f"while 接待中 they get handoffs with their WeCom business card, any hour, at most "
                     f"{DEFAULT_MAX_CONCURRENT} at once, as 顾问 and their WeCom name; add them to "
                     "content/consultants.yaml to set card, hours and capacity")


def _consultant_ids(settings: Settings) -> list[str]:
    path = (settings.content or {}).get("consultants")
    if not path:
        return []
    try:
        from bot.content.team import load_team

        return [c.userid for c in load_team(path, settings.timezone).consultants]
    except Exception:
        return []


def _clock_from(resp: Any, rep: Report) -> None:
    """Compare our clock with the API server's Date header (callbacks more than 300 s off are refused)."""
    raw = resp.headers.get("Date") if resp is not None else None
    if not raw:
        return
    try:
        theirs = email.utils.parsedate_to_datetime(raw).timestamp()
    except (TypeError, ValueError):
        return
    skew = time.time() - theirs
    if abs(skew) > 60:
        rep.fail(f"clock: this server is {skew:+.0f} s off the WeCom API server's clock",
                 "enable NTP (timedatectl set-ntp true); callbacks more than 5 minutes off are refused")


def check_time(settings: Settings, rep: Report) -> None:
    """The configured timezone and what time it is there (quiet hours, working hours and SOP use it)."""
    tz = settings.timezone
    now = datetime.now(tz)
    system = datetime.now().astimezone().tzinfo
    rep.ok(f"timezone {tz.key}: local time {now:%Y-%m-%d %H:%M} (UTC{now:%z}); system timezone {system}")
    if tz.key not in ("Asia/Shanghai", "Asia/Chongqing", "Asia/Hong_Kong", "Asia/Taipei", "PRC"):
        rep.warn(f"timezone {tz.key} is not China time", "set WECOM_BOT_TIMEZONE=Asia/Shanghai unless your "
                                                           "customers really live in another timezone")
