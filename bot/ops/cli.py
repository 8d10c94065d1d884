"""`wecom-bot`: serve, web, worker, scheduler, chat, dlq, intents, coupons."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from bot.ops.common import cli_user, operator, runtime_or_exit, settings_or_exit
from bot.redis_server import redact
from bot.yamlfile import ConfigError

log = logging.getLogger("bot")


def _catch_signals() -> list[int]:
    """From now on SIGINT/SIGTERM only append to the returned list (see _wait_for_signal)."""
    received: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    return received


def _wait_for_signal(received: list[int], stop: threading.Event) -> None:
    """Block until a signal was caught, then set `stop`. The handler only appends: calling
    Event.set() inside a handler can deadlock on the lock the interrupted Event.wait() holds."""
    while not received and not stop.is_set():
        time.sleep(0.2)
    stop.set()


def cmd_serve(args: argparse.Namespace) -> int:
    """Web + worker + scheduler in one process (embedded Redis and the sandbox when unconfigured)."""
    from waitress.server import create_server

    from bot.runtime import start_threads, write_sandbox_info
    from bot.web.limits import SERVE_LIMITS

    settings = settings_or_exit()
    received = _catch_signals()
    rt = runtime_or_exit(settings, sandbox_port=args.sandbox_port, lazy_classifier=False)
    if rt.sandbox and not rt.settings.admin_token:  # the console is never open by accident: a token per run
        rt.settings = dataclasses.replace(rt.settings, admin_token=secrets.token_urlsafe(18))
    stop = threading.Event()
    listening = {"url": ""}
    try:
        try:
            server = create_server(rt.app(lambda: listening["url"]), host=args.host, port=args.port,
                                   threads=args.threads, **SERVE_LIMITS)
        except OSError as exc:
            raise SystemExit(f"cannot listen on {args.host}:{args.port} ({exc.strerror}); "
                             f"is another `wecom-bot serve` running? (--port)") from None
        url = f"http://{args.host}:{server.effective_port}"
        listening["url"] = f"http://{_loopback(args.host)}:{server.effective_port}"
        if rt.sandbox:
            info = write_sandbox_info(rt, url)
            print(f"SANDBOX MODE: WECOM_SECRET is not set, so WeCom is the local sandbox at {rt.sandbox.url} "
                  f"(CorpID {rt.settings.corp_id}, Token {rt.settings.token}, EncodingAESKey "
                  f"{rt.settings.aes_key}; details in {info}). Talk to the bot with: uv run wecom-bot chat",
                  flush=True)
        print(f"redis: {'embedded at ' + redact(rt.embedded.url) if rt.embedded else 'configured'}; "
              f"callback URL: {url}{rt.settings.callback_path}; health: {url}/healthz", flush=True)
        console = (f"{url}/admin/login?token={rt.settings.admin_token}" if rt.sandbox
                   else f"{url}/admin/ (log in with WECOM_BOT_ADMIN_TOKEN)" if rt.settings.admin_token
                   else "off (set WECOM_BOT_ADMIN_TOKEN)")
        print(f"console: {console}", flush=True)
        workers = start_threads(rt, args.workers, stop)
        scheduler = rt.scheduler(stop)
        scheduler.start()
        threading.Thread(target=server.run, daemon=True, name="web").start()
        _wait_for_signal(received, stop)
        print("stopping...", flush=True)
        server.close()
        scheduler.shutdown()
        for t in workers:  # let in-flight entries finish before Redis goes away
            t.join(timeout=10)
    finally:
        stop.set()
        rt.close()
    return 0


def _loopback(host: str) -> str:
    """How this process reaches its own listener bound to `host`."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def cmd_web(args: argparse.Namespace) -> int:
    """The webhook under gunicorn (production); no worker or scheduler in this process."""
    from gunicorn.app.base import BaseApplication

    from bot.web.limits import CONNECTION_LIMIT, GUNICORN_WORKER

    settings = settings_or_exit()
    if not settings.external_redis:
        raise SystemExit("wecom-bot web runs several processes on one Redis: set REDIS_URL "
                         "(or use `wecom-bot serve` for one process with the embedded Redis)")

    class App(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{args.host}:{args.port}")
            self.cfg.set("workers", args.workers)
            self.cfg.set("threads", args.threads)
            self.cfg.set("worker_class", GUNICORN_WORKER)
            self.cfg.set("worker_connections", CONNECTION_LIMIT)
            self.cfg.set("keepalive", 5)
            self.cfg.set("accesslog", None)

        def load(self) -> Any:
            from bot.runtime import production_app

            return production_app(settings)

    App().run()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Inbox consumers (threads) in this process."""
    from bot.runtime import start_threads

    received = _catch_signals()
    rt = runtime_or_exit(settings_or_exit(), with_sandbox=False, lazy_classifier=False)
    stop = threading.Event()
    try:
        threads = start_threads(rt, args.threads, stop)
        _wait_for_signal(received, stop)
        for t in threads:
            t.join(timeout=10)
    finally:
        rt.close()
    return 0


def cmd_scheduler(args: argparse.Namespace) -> int:
    """The scheduler process (one active at a time, by Redis lease)."""

    received = _catch_signals()
    rt = runtime_or_exit(settings_or_exit(), with_sandbox=False)
    stop = threading.Event()
    scheduler = rt.scheduler(stop)
    try:
        scheduler.start()
        _wait_for_signal(received, stop)
        scheduler.shutdown()
    finally:
        rt.close()
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    """Type as a customer; see what the bot and staff were sent."""
    from bot.ops.chat import run_chat

    decisions: Callable[[float], list[dict[str, Any]]] | None = None
    if args.debug:
        from bot.ops.common import existing_redis
        from bot.records.store import Store

        r = existing_redis(settings_or_exit())
        if r is None:
            raise SystemExit("chat --debug reads the running service's Redis: start it with `uv run wecom-bot serve`")
        store = Store(r)

        def decisions(since: float) -> list[dict[str, Any]]:
            return [e for e in store.events(50) if e["kind"] == "message_in" and e["at"] >= since]

    return run_chat(args.info, args.customer, sys.stdin, sys.stdout, wait=args.wait, decisions=decisions,
                    channel=args.channel)


def cmd_dlq(args: argparse.Namespace) -> int:
    """List or replay dead letters."""
    from bot.queue.inbox import Inbox

    rt = runtime_or_exit(settings_or_exit(), with_sandbox=False)
    try:
        inbox = Inbox(rt.r)
        if args.action == "list":
            letters = inbox.dead_letters(args.limit)
            for d in letters:
                if args.json:
                    print(json.dumps(d, ensure_ascii=False))
                else:
                    print(f"{d['id']}  {d['kind']}  {d.get('error', '')}\n    {d['data'][:200]}")
            if not letters and not args.json:
                print("no dead letters")
        else:
            n = operator(rt).replay(args.ids or None, cli_user())
            print(f"replayed {n} dead letter(s) into the inbox")
            if args.ids and n < len(args.ids):
                print(f"{len(args.ids) - n} of the ids given are not dead letters (see `wecom-bot dlq list`)",
                      file=sys.stderr)
                return 1
    finally:
        rt.close()
    return 0


HANDOFF_ACTIONS = {"closed": "closed {ref}: the kf session ended, the bot answers the customer again",
                   "already_closed": "{ref} is already closed", "unknown": "no handoff {ref} (see `wecom-bot handoffs list`)",
                   "reassigned": "reassigned {ref} to {userid}: the chat is transferred to them and they got the alert",
                   "same": "{ref} is already assigned to {userid}",
                   "too_late": "{ref} cannot be reassigned: a consultant already replied, or it is closed",
                   "unknown_consultant": "{userid} is neither in content/consultants.yaml nor a receiving kf servicer"}


def _handoff_action(args: argparse.Namespace) -> int:
    """`handoffs close ID` / `handoffs reassign ID USERID`."""
    if not args.ref or (args.action == "reassign" and not args.userid):
        raise SystemExit("usage: wecom-bot handoffs close ID  |  handoffs reassign ID USERID")
    rt = runtime_or_exit(settings_or_exit(), with_sandbox=False)
    try:
        op = operator(rt)
        res = (op.close(args.ref, cli_user()) if args.action == "close"
               else op.reassign(args.ref, args.userid, cli_user()))
    finally:
        rt.close()
    print(HANDOFF_ACTIONS[res].format(ref=args.ref, userid=args.userid), file=sys.stdout if res in (
        "closed", "reassigned") else sys.stderr)
    return 0 if res in ("closed", "reassigned", "same") else 1


def cmd_intents(args: argparse.Namespace) -> int:
    """Classify stdin lines, evaluate a labelled file or the corpus, or explain one decision."""
    from intents.cli import classify_lines, eval_cv, eval_file, explain, from_content

    settings = settings_or_exit()
    try:
        classifier = from_content(settings.content)
    except ConfigError as exc:
        raise SystemExit(f"config error: {exc}") from None
    if args.action == "classify":
        classify_lines(classifier, sys.stdin, sys.stdout)
        return 0
    if args.action == "explain":
        if not args.file:
            raise SystemExit("usage: wecom-bot intents explain TEXT [--previous TEXT]")
        sys.stdout.write(explain(classifier, " ".join(args.file), args.previous))
        return 0
    try:
        if args.cv or args.by_brand:
            return eval_cv(classifier, settings.content.get("examples"), args.cv or 5, args.by_brand,
                           args.json, sys.stdout)
        if len(args.file) != 1:
            raise SystemExit("usage: wecom-bot intents eval FILE [--json]  |  intents eval --cv 5 [--by-brand]")
        return eval_file(classifier, args.file[0], args.json, sys.stdout)
    except ConfigError as exc:
        raise SystemExit(f"cannot evaluate: {exc}") from None


def cmd_coupons(args: argparse.Namespace) -> int:
    """Coupon numbers, or report a redemption."""
    from datetime import datetime

    rt = runtime_or_exit(settings_or_exit(), with_sandbox=False)
    try:
        book = rt.coupons()
        if book is None:
            raise SystemExit("no coupon campaigns configured (config.yaml content.coupons)")
        now = datetime.now(rt.settings.timezone)
        if args.action == "stats":
            rows = book.stats(now)
            if args.json:
                print(json.dumps(rows, ensure_ascii=False))
            else:
                print(f"{'campaign':24} {'budget':>7} {'issued':>7} {'remaining':>9} {'redeemed':>8} {'expired':>7}")
                for row in rows:
                    print(f"{row['campaign']:24} {row['budget']:>7} {row['issued']:>7} {row['remaining']:>9} "
                          f"{row['redeemed']:>8} {row['expired']:>7}")
            return 0
        from bot.act.triggers import redeem_coupon

        result = redeem_coupon(book, rt.engine(), args.code, now, args.order, rt.outcomes)
        print(json.dumps({"code": args.code, "status": result.status}, ensure_ascii=False))
        return 0 if result.status in ("redeemed", "already") else 1
    finally:
        rt.close()


def cmd_handoffs(args: argparse.Namespace) -> int:
    """Open handoffs, or the numbers: time to claim and to first human reply, share within SLA."""
    from dataclasses import asdict
    from datetime import datetime, timedelta

    from bot.records import handoff_stats
    from bot.records.handoffs import Handoffs
    from bot.records.labels import intent_zh, zh

    if args.action in ("close", "reassign"):
        return _handoff_action(args)
    rt = runtime_or_exit(settings_or_exit(), with_sandbox=False)
    try:
        book = Handoffs(rt.r, rt.settings.timezone)
        now = datetime.now(rt.settings.timezone)
        if args.action == "stats":
            stats = handoff_stats.stats(book, now, now - timedelta(days=args.days))
            if args.json:
                print(json.dumps(stats, ensure_ascii=False, default=str))
            else:
                _print_handoff_stats(stats, args.days)
            return 0
        rows = book.list(None if args.all else "open") + ([] if args.all else book.list("claimed") +
                                                            book.list("answered"))
        if rows and not args.json:
            print(f"{'no':5} {'id':16}  {'state':6} {'intent':6} {'customer':24} {'holder':18} {'waited':>8}  message")
        for h in rows:
            if args.json:
                print(json.dumps(asdict(h), ensure_ascii=False, default=str))
            else:  # states and intents in Chinese, as the console shows them (bot/records/labels.py)
                waited = int((now - h.created_at).total_seconds() // 60)
                print(f"{h.ref:5} {h.id:16}  {zh(h.state, 'handoff_state'):4} {intent_zh(h.intent):4} "
                      f"{h.customer:24} {h.holder or '(排队中)':18} {waited:>4} min  {h.text[:40]}")
        if not rows and not args.json:
            print("no handoffs" if args.all else "no open handoffs")
        return 0
    finally:
        rt.close()


def _duration(seconds: float | None) -> str:
    """45s, 3.5m or 2.1h; "-" when there is nothing to measure."""
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.1f}m" if seconds < 5400 else f"{seconds / 3600:.1f}h"


def _print_handoff_stats(stats: dict[str, Any], days: int) -> None:
    """`handoffs stats` as a table: one row for all handoffs, then one per intent and per consultant."""
    print(f"handoffs from {stats['since'][:16].replace('T', ' ')} to {stats['now'][:16].replace('T', ' ')} "
          f"({days} days); times are median / p90; in SLA: the share within the intent's SLA")
    print(f"{'':22} {'count':>5} {'open':>4} {'claimed':>7} {'answered':>8} {'closed':>6}  "
          f"{'to claim':>13} {'in SLA':>6}  {'to 1st reply':>13} {'in SLA':>6} {'escalated':>9}")

    def share(t: dict[str, Any]) -> str:
        return "-" if t["within_sla"] is None else f"{t['within_sla']:.0%}"

    def row(name: str, b: dict[str, Any]) -> None:
        claim, reply = b["time_to_claim"], b["time_to_first_reply"]
        print(f"{name[:22]:22} {b['count']:>5} {b['open']:>4} {b['claimed']:>7} {b['answered']:>8} {b['closed']:>6}  "
              f"{_duration(claim['median']) + ' / ' + _duration(claim['p90']):>13} {share(claim):>6}  "
              f"{_duration(reply['median']) + ' / ' + _duration(reply['p90']):>13} {share(reply):>6} "
              f"{b['escalated']:>9}")

    row("all", stats["total"])
    for title, key in (("by intent", "by_intent"), ("by consultant", "by_consultant")):
        if stats[key]:
            print(f"{title}:")
            for name, block in stats[key].items():
                row("  " + name, block)


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check the set-up and say what to fix; non-zero exit when something is wrong."""
    from bot.ops.doctor import run_doctor

    return run_doctor(settings_or_exit(), sys.stdout)


class JsonFormatter(logging.Formatter):
    """One JSON object per log line."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                           "message": record.getMessage()}, ensure_ascii=False)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples as written and adds "(default: X)" to every option that has a default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (action.option_strings and "%(default)" not in text and action.default is not None
                and action.default is not False and action.default is not argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


EXAMPLES: dict[str, list[str]] = {
    "": ["serve                      # everything on this machine (sandbox when WECOM_SECRET is unset)",
         "chat                       # be a customer of the running sandbox bot",
         "doctor                     # check the set-up", "handoffs list", "sop plan --customer wmAlice"],
    "serve": ["serve", "serve --port 8080 --workers 4", "serve --host 0.0.0.0 --sandbox-port 9001"],
    "web": ["web --port 8000 --workers 4   # with REDIS_URL set; run `worker` and `scheduler` too"],
    "worker": ["worker", "worker --threads 4"],
    "scheduler": ["scheduler"],
    "chat": ["chat", "chat --customer wmAlice --debug", "chat --wait 5 < messages.txt", "chat --channel live_0618"],
    "dlq": ["dlq list", "dlq list --json --limit 20", "dlq replay", "dlq replay 1718000000000-0"],
    "intents": ["intents classify < messages.txt", "intents eval tests/data/dev-utterances.tsv --json", "intents eval --cv 5",
                "intents eval --cv 5 --by-brand", "intents explain 这个多少钱", "intents explain 那个呢 --previous 有优惠吗"],
    "coupons": ["coupons stats", "coupons stats --json", "coupons redeem AB12CD34 --order 20240601-001"],
    "doctor": ["doctor"],
    "handoffs": ["handoffs list", "handoffs list --all --json", "handoffs stats", "handoffs stats --days 30 --json",
                 "handoffs close 12               # today's #12 (or the long id)",
                 "handoffs reassign 12 wang.consultant"],
    "sop": ["sop validate", "sop plan --customer wmAlice --days 7", "sop plan --segment new", "sop reload"],
    "sop validate": ["sop validate", "sop validate sop/journeys/new_customer_week.yaml"],
    "sop plan": ["sop plan --customer wmAlice", "sop plan --customer wmAlice --start 2026-12-07T09:00 --days 7 --json",
                 "sop plan --segment tag:询价"],
    "sop reload": ["sop reload"],
    "sop pause": ["sop pause new_customer_week"],
    "sop resume": ["sop resume new_customer_week"],
    "purchase": ["purchase wmAlice 20240601-001 --amount 199", "purchase wmAlice 20240601-002 --at 2024-06-01T10:00"],
    "birthday": ["birthday wmAlice 05-20", "birthday wmAlice 1990-05-20"],
    "experiments": ["experiments list", "experiments stats", "experiments stats --json",
                    "experiments stats --experiment coupon:spend199-save30"],
    "channels": ["channels validate", "channels sync", "channels list", "channels stats --days 7"],
    "channels sync": ["channels sync", "channels sync --json"],
    "channels list": ["channels list", "channels list --json"],
    "channels stats": ["channels stats", "channels stats --from 2026-11-01 --to 2026-12-01 --json"],
    "channels validate": ["channels validate", "channels validate content/channels.yaml"],
}

# Help for the options bot/ops/cli_sop.py declares without one.
OPTION_HELP: dict[tuple[str, str], str] = {
    ("sop plan", "customer"): "the customer's external_userid (read from Redis; unknown: a new customer)",
    ("sop plan", "days"): "how many days to preview",
    ("purchase", "customer"): "the customer's external_userid",
    ("purchase", "order_id"): "the order id (an order is recorded once)",
    ("purchase", "amount"): "the order amount",
    ("birthday", "customer"): "the customer's external_userid",
}


class _Commands(argparse._SubParsersAction):
    """Subcommands whose description is their one-line help, with their examples as the epilog."""

    def add_parser(self, name: str, **kw: Any) -> argparse.ArgumentParser:
        if kw.get("help") and not kw.get("description"):
            kw["description"] = kw["help"][:1].upper() + kw["help"][1:] + "."
        parser: argparse.ArgumentParser = super().add_parser(name, **kw)
        examples = EXAMPLES.get(parser.prog.removeprefix("wecom-bot").strip())
        if examples and parser.epilog is None:
            parser.epilog = "examples:\n" + "\n".join(f"  uv run wecom-bot {e}" for e in examples)
        return parser


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose commands (and their subcommands) use HelpFormatter and _Commands."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kw)
        self.register("action", "parsers", _Commands)


def walk(parser: argparse.ArgumentParser, path: str = "") -> list[tuple[str, argparse.ArgumentParser]]:
    """(command path, parser) for `parser` and every subcommand under it ("" is wecom-bot itself)."""
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += walk(child, f"{path} {name}".strip())
    return found


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="wecom-bot", description="WeCom private-domain assistant: the 微信客服 bot, its workers, "
               "scheduler and operator commands. `wecom-bot COMMAND --help` explains each command.",
               epilog="examples:\n" + "\n".join(f"  uv run wecom-bot {e}" for e in EXAMPLES[""]))
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    p.add_argument("--log-json", action="store_true", help="one JSON object per log line")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        sp.set_defaults(func=fn)
        return sp

    sp = add("serve", cmd_serve, "web + worker + scheduler in one process (embedded Redis, and the WeCom "
             "sandbox when WECOM_SECRET is unset)")
    sp.add_argument("--host", default="127.0.0.1", help="address the webhook listens on")
    sp.add_argument("--port", type=int, default=8000, help="port of the webhook (0: any free port)")
    sp.add_argument("--workers", type=int, default=2, help="inbox worker threads")
    sp.add_argument("--threads", type=int, default=8, help="web threads")
    sp.add_argument("--sandbox-port", type=int, default=8001, help="port of the WeCom sandbox (sandbox mode only)")
    sp = add("web", cmd_web, "the webhook under gunicorn (production; needs REDIS_URL)")
    sp.add_argument("--host", default="0.0.0.0", help="address to listen on")
    sp.add_argument("--port", type=int, default=8000, help="port to listen on")
    sp.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    sp.add_argument("--threads", type=int, default=8, help="threads per gunicorn worker")
    sp = add("worker", cmd_worker, "inbox workers; run as many as you like on one Redis")
    sp.add_argument("--threads", type=int, default=8,
                    help="worker threads in this process (each waits on one WeCom call at a time)")
    add("scheduler", cmd_scheduler, "the scheduler (one active per deployment, a Redis lease keeps others on standby)")
    sp = add("chat", cmd_chat, "be a customer of the running sandbox bot from this terminal (/help: staff commands)")
    sp.add_argument("--customer", default="wmSandboxCustomer01", help="your external_userid as the customer")
    sp.add_argument("--info", default=None, help="the var/sandbox.json `serve` wrote (default: var/sandbox.json)")
    sp.add_argument("--wait", type=float, default=3.0, help="seconds to wait for the answer to a line")
    sp.add_argument("--debug", action="store_true", help="show the intent, confidence and route of each message")
    sp.add_argument("--channel", metavar="ID", help="first scan the code of this channel (content/channels.yaml; "
                                                   "`channels sync` made it): a staff QR code or the kf link")
    sp = add("dlq", cmd_dlq, "dead letters: inbox entries that kept failing, with their error")
    sp.add_argument("action", choices=["list", "replay"], help="list: show them; replay: put them back in the inbox")
    sp.add_argument("ids", nargs="*", help="replay: only these entry ids (default: all)")
    sp.add_argument("--json", action="store_true", help="list: one JSON object per line")
    sp.add_argument("--limit", type=int, default=100, help="list: at most this many")
    sp = add("intents", cmd_intents, "intent detection: classify stdin lines, eval a labelled file or the "
             "corpus, explain one message")
    sp.add_argument("action", choices=["classify", "eval", "explain"],
                    help="classify: one JSON object per stdin line; eval: precision/recall/F1; explain: one decision")
    sp.add_argument("file", nargs="*", help="eval: a text<TAB>label[<TAB>kind] file; explain: the message")
    sp.add_argument("--json", action="store_true", help="eval: one JSON object instead of the report")
    sp.add_argument("--cv", type=int, default=0, metavar="K",
                    help="eval: K-fold cross-validation on the shipped example corpus (e.g. --cv 5; 0: off)")
    sp.add_argument("--by-brand", action="store_true",
                    help="eval: hold out one brand file of the corpus at a time (brands the model never saw)")
    sp.add_argument("--previous", default=None, help="explain: the customer's previous message, as context")
    sp = add("coupons", cmd_coupons, "coupon campaigns: budget, issued, remaining, redeemed, expired; "
             "report a redemption")
    sp.add_argument("action", choices=["stats", "redeem"], help="stats: per campaign; redeem: report one CODE used")
    sp.add_argument("code", nargs="?", help="redeem: the coupon code")
    sp.add_argument("--order", default=None, help="redeem: the order it was used on")
    sp.add_argument("--json", action="store_true", help="stats: a JSON array instead of the table")
    add("doctor", cmd_doctor, "check the set-up and say what to fix (exit 1 when something is wrong)")
    sp = add("handoffs", cmd_handoffs, "handoffs to humans: the open ones, time to claim and to first reply; "
             "close or reassign one")
    sp.add_argument("action", choices=["list", "stats", "close", "reassign"],
                    help="list: open handoffs, who holds them, waiting time; stats: the numbers over --days; "
                         "close ID: end the kf session, the bot answers again; reassign ID USERID: transfer the "
                         "chat to that consultant and alert them")
    sp.add_argument("ref", nargs="?", metavar="ID", help="close / reassign: the handoff's long id or the day's number (12)")
    sp.add_argument("userid", nargs="?", metavar="USERID", help="reassign: the consultant's WeCom userid")
    sp.add_argument("--json", action="store_true", help="one JSON object per handoff (list) or one object (stats)")
    sp.add_argument("--all", action="store_true", help="list: closed ones too")
    sp.add_argument("--days", type=int, default=7, help="stats: the period, in days back from now")
    from bot.ops import cli_channels, cli_experiments, cli_sop

    cli_sop.register(sub)
    cli_experiments.register(sub)
    cli_channels.register(sub)
    for path, parser in walk(p):
        for action in parser._actions:
            if action.help is None:
                action.help = OPTION_HELP.get((path, action.dest))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_json:
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    for noisy in ("jieba", "apscheduler", "waitress.queue"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command == "intents" and args.action == "eval" and not args.file and not (args.cv or args.by_brand):
        raise SystemExit("usage: wecom-bot intents eval FILE [--json]  |  intents eval --cv 5 [--by-brand]")
    if args.command == "coupons" and args.action == "redeem" and not args.code:
        raise SystemExit("usage: wecom-bot coupons redeem CODE")
    try:
        return args.func(args)
    except BrokenPipeError:  # `wecom-bot ... | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
