"""`wecom-bot sop validate|plan|reload`, `wecom-bot purchase`, `wecom-bot birthday`: SOP operator commands."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from bot.act.triggers import parse_birthday, record_purchase
from bot.config import Settings
from bot.content.campaigns import load_campaigns
from bot.ops.cli_experiments import print_arms
from bot.ops.common import cli_user, existing_redis, operator, runtime_or_exit, settings_or_exit
from bot.records.customers import Customers
from bot.records.experiments import Experiments, declared
from bot.times import parse_at
from bot.yamlfile import ConfigError
from sop import cli as sop_cli
from sop import journeys as journeys_mod
from sop.engine import Engine
from sop.journeys import Journey, Segment
from sop.plan_view import CustomerPlan, customer_plan, plan_of

if TYPE_CHECKING:
    from bot.runtime import Runtime

__all__ = ["register", "RELOAD_KEY"]

from bot.queue.scheduler import RELOAD_KEY  # noqa: E402 - the running scheduler reloads when this changes

LIFECYCLES = ("new", "active", "silent")


def _configured(settings: Settings) -> Path:
    """The journeys the service runs: config.yaml's content.journeys (what the scheduler loads and reloads)."""
    path = settings.content.get("journeys")
    if path is None:
        raise SystemExit(f"no journeys configured ({settings.config_path}: content.journeys)")
    return Path(path)


def _journeys(path: Path) -> list[Journey]:
    """Valid journeys under `path`, or exit 1 printing every error."""
    found, errors = journeys_mod.load_dir(path)
    if errors:
        sop_cli.validate_cmd(path, sys.stderr)
        raise SystemExit(1)
    return found


def _plan(r: redis.Redis | None, found: list[Journey], settings: Settings, customer: str, start: Any,
          days: int) -> CustomerPlan:
    """The customer's plan (sop.plan_view.customer_plan, as the console shows it); without Redis, the simulation of
    a hypothetical new customer. Unknown customers are previewed as new, with a note on stderr."""
    tz = settings.timezone
    known = r is not None and Customers(r).exists(customer)
    if not known:
        where = "no Redis reachable" if r is None else "not in Redis"
        print(f"customer {customer}: {where}; previewing a hypothetical new customer", file=sys.stderr)
    if r is None:
        return plan_of(found, settings.sop_rules, None, start, days, tz, customer=customer)
    return customer_plan(r, found, settings.sop_rules, tz, Customers(r), customer, start, days, exists=known)


def _arms(r: redis.Redis | None, found: list[Journey], settings: Settings, customer: str) -> None:
    """The customer's arm of each experiment of these journeys and of the coupon campaigns (recorded or would get)."""
    path = settings.content.get("coupons")
    try:
        campaigns = load_campaigns(path, settings.timezone) if path else ()
    except ConfigError:
        campaigns = ()  # the coupons file's own errors are for the service and `coupons stats` to report
    experiments = Experiments(r, settings.timezone) if r is not None else None
    print_arms(experiments, declared(found, campaigns), customer, settings.timezone, sys.stdout)


def _segment(name: str, found: list[Journey]) -> Segment:
    """NAME: a lifecycle (new|active|silent), tag:TAG, a journey id (its segment), or all."""
    if name == "all":
        return Segment()
    if name in LIFECYCLES:
        return Segment(lifecycle=(name,))
    if name.startswith("tag:"):
        return Segment(tags=(name[4:],))
    for j in found:
        if j.id == name:
            return j.segment
    raise SystemExit(f"unknown segment {name!r}: use new, active, silent, tag:TAG, all or a journey id")


def cmd_validate(args: argparse.Namespace) -> int:
    """Errors with file, line and key; exit status 1 if any (default: the configured journeys)."""
    return sop_cli.validate_cmd(args.path or _configured(settings_or_exit()), sys.stdout)


def cmd_plan(args: argparse.Namespace) -> int:
    """One customer's plan: what the engine holds in Redis (pending steps, stopped journeys), then what would
    follow (simulated) with reasons; or a segment's simulated counts per day."""
    settings = settings_or_exit()
    tz = settings.timezone
    found = _journeys(Path(args.path) if args.path else _configured(settings))
    try:
        start = parse_at(args.start, tz)
    except ValueError:
        raise SystemExit(f"--start must be an ISO 8601 time, got {args.start!r}") from None
    r = existing_redis(settings)
    try:
        if args.segment:
            if r is None:
                raise SystemExit("sop plan --segment reads the customers from Redis: set REDIS_URL or run serve")
            return sop_cli.segment_cmd(found, settings.sop_rules, Customers(r).all(), start, args.days, sys.stdout, tz,
                                       _segment(args.segment, found))
        if not args.customer:
            raise SystemExit("usage: wecom-bot sop plan --customer ID | --segment NAME")
        if args.pending and not args.json:
            raise SystemExit("--pending goes with --json (the text output always shows the engine's part first)")
        plan = _plan(r, found, settings, args.customer, start, args.days)
        status = sop_cli.print_plan(plan, found, args.json, sys.stdout, tz, pending_json=args.pending)
        if not args.json:
            _arms(r, found, settings, args.customer)
        return status
    finally:
        if r is not None:
            r.close()


def cmd_reload(args: argparse.Namespace) -> int:
    """Validate, then ask the running scheduler to reload (it keeps the old journeys if the files are bad)."""
    settings = settings_or_exit()
    where = _configured(settings)
    found = _journeys(Path(args.path) if args.path else where)
    if args.path and Path(args.path).resolve() != where.resolve():
        print(f"{args.path} is valid, but the scheduler reloads content.journeys ({where}); "
              f"point {settings.config_path} at {args.path} to run it", file=sys.stderr)
        raise SystemExit(1)
    rt = runtime_or_exit(settings, with_sandbox=False)
    try:
        now = time.time()
        rt.r.set(RELOAD_KEY, f"{now:.3f}")
    finally:
        rt.close()
    print(f"ok: {len(found)} journeys valid in {where}; set {RELOAD_KEY}={now:.3f}. The running scheduler "
          f"reloads them on its next tick; pending touches continue on the new version by step id.")
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    """Pause a journey (its due touches wait, unsent) or resume it (they are due again now)."""
    settings = settings_or_exit()
    found = {j.id for j in _journeys(_configured(settings))}
    if args.journey not in found:
        raise SystemExit(f"unknown journey {args.journey!r}: one of {', '.join(sorted(found))}")
    rt = runtime_or_exit(settings, with_sandbox=False)
    try:
        op = operator(rt)
        if args.sop_command == "pause":
            done = op.pause(args.journey, cli_user())
            print(f"paused {args.journey}: its due touches wait, unsent, until `wecom-bot sop resume {args.journey}`"
                  if done else f"{args.journey} is already paused")
        else:
            released = op.resume(args.journey, cli_user())
            print(f"{args.journey} is not paused" if released is None
                  else f"resumed {args.journey}: {released} held touch(es) are due again")
    finally:
        rt.close()
    return 0


def _runtime() -> Runtime:
    return runtime_or_exit(settings_or_exit(), with_sandbox=False)


def _engine(rt: Runtime) -> Engine:
    """The runtime's SOP engine over config.yaml's content.journeys; exit 1 when none are configured."""
    engine = rt.engine()
    if engine is None:
        raise SystemExit("no journeys configured (config.yaml content.journeys)")
    return engine


def cmd_purchase(args: argparse.Namespace) -> int:
    """Record an order: enrols the purchase journeys (day-3 guide) once per order id."""
    rt = _runtime()
    try:
        at = parse_at(args.at, rt.settings.timezone)
        new, n = record_purchase(rt.r, _engine(rt), args.customer, args.order_id, at, args.amount, rt.outcomes)
    except ValueError as exc:
        raise SystemExit(f"bad input: {exc}") from None
    finally:
        rt.close()
    status = f"recorded, {n} journey(s) enrolled" if new else "already recorded (nothing changed)"
    print(f"order {args.order_id} for {args.customer}: {status}")
    return 0


def cmd_birthday(args: argparse.Namespace) -> int:
    """Remember a customer's birthday (MM-DD or YYYY-MM-DD) for the birthday journey."""
    try:
        day = parse_birthday(args.date)
    except ValueError:
        raise SystemExit(f"birthday must be MM-DD or YYYY-MM-DD, got {args.date!r}") from None
    rt = _runtime()
    try:
        _engine(rt).set_birthday(args.customer, day)
    finally:
        rt.close()
    print(f"birthday of {args.customer}: {day:%m-%d}")
    return 0


def register(sub: Any) -> None:
    """Add `sop`, `purchase` and `birthday` to the wecom-bot subparsers."""
    sop = sub.add_parser("sop", help="SOP journeys: validate, plan preview, reload, pause and resume")
    sop_sub = sop.add_subparsers(dest="sop_command", required=True)
    v = sop_sub.add_parser("validate", help="check journey YAML (file:line: key: message)")
    v.add_argument("path", nargs="?", help="a directory or file (default: config.yaml content.journeys)")
    v.set_defaults(func=cmd_validate)
    p = sop_sub.add_parser("plan", help="what the engine holds for a customer, then what would follow, and why not",
                           description="--customer: first the steps the engine has pending in Redis for the "
                           "customer (journey, step, local due time, channel, what the tick decides) and the "
                           "journeys it stopped and why; then, marked as simulated, what would follow. "
                           "--segment: simulated counts per day for a group of customers.")
    p.add_argument("--customer", help="a customer id (external_userid)")
    p.add_argument("--segment", metavar="NAME",
                   help="simulate every customer in Redis who is in NAME and print, per local day, how many "
                        "touches they would get by decision and channel (send:kf, send:mass_task, remind:staff, "
                        "defer, skip); NAME is new|active|silent (lifecycle at --start: new = first seen under 8 days "
                        "before, silent = 30+ days without a message, active = the rest), tag:TAG (customers with that "
                        "tag), all, or a journey id (that journey's segment). Reads no pending steps.")
    p.add_argument("--start", help="ISO 8601 (local time if no offset); default now")
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--json", action="store_true", help="one object per line of what would follow")
    p.add_argument("--pending", action="store_true",
                   help="with --json: first a line {\"pending\": [...], \"stopped\": [...]} of what the engine holds")
    p.add_argument("--path", help="journeys to preview (default: config.yaml content.journeys)")
    p.set_defaults(func=cmd_plan)
    rl = sop_sub.add_parser("reload", help="validate, then make the running scheduler reload")
    rl.add_argument("--path", help="check that it is the configured content.journeys, then validate it")
    rl.set_defaults(func=cmd_reload)
    for verb, what in (("pause", "pause a journey: its due touches wait, unsent, until resume (the scheduler "
                                 "honours it at its next tick; `sop plan` shows them as paused)"),
                       ("resume", "resume a paused journey: the touches it held are due again now")):
        ps = sop_sub.add_parser(verb, help=what)
        ps.add_argument("journey", metavar="JOURNEY", help="the journey id (as in `sop validate` / the console's SOP page)")
        ps.set_defaults(func=cmd_pause)
    pu = sub.add_parser("purchase", help="record an order (starts the day-3 usage guide)")
    pu.add_argument("customer")
    pu.add_argument("order_id")
    pu.add_argument("--amount", type=float, default=None)
    pu.add_argument("--at", default=None, help="ISO 8601 order time; default now")
    pu.set_defaults(func=cmd_purchase)
    b = sub.add_parser("birthday", help="set a customer's birthday (MM-DD)")
    b.add_argument("customer")
    b.add_argument("date", help="MM-DD or YYYY-MM-DD")
    b.set_defaults(func=cmd_birthday)
