"""`wecom-bot channels validate|sync|list|stats`: the 渠道活码 an operator prints, and what they brought."""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from bot.config import Settings
from bot.content.channels import ChannelFile, load_channels
from bot.ops.common import runtime_or_exit, settings_or_exit
from bot.records.channels import UNKNOWN, ChannelBook, channel_stats
from bot.times import parse_at
from bot.yamlfile import ConfigError

if TYPE_CHECKING:
    from bot.runtime import Runtime

__all__ = ["register"]

ACTIONS = ("created", "updated", "replaced", "unchanged", "failed")


def _configured(settings: Settings) -> Path:
    path = settings.content.get("channels")
    if path is None:
        raise SystemExit(f"no channels configured ({settings.config_path}: content.channels)")
    return Path(path)


def _journey_ids(settings: Settings) -> frozenset[str] | None:
    from sop import journeys

    path = settings.content.get("journeys")
    if path is None:
        return None
    found, _ = journeys.load_dir(Path(path))
    return frozenset(j.id for j in found)


def cmd_validate(args: argparse.Namespace) -> int:
    """Check channels YAML; prints file:line: key: message and exits 1 on the first error."""
    settings = settings_or_exit()
    path = Path(args.path) if args.path else _configured(settings)
    try:
        found = load_channels(path, _journey_ids(settings))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{path}: {len(found.channels)} channel(s) OK")
    return 0


def _runtime(settings: Settings) -> Runtime:
    """A runtime whose WeCom is the real one, or in sandbox mode the running service's sandbox."""
    if settings.sandbox:
        info = settings.root / "var" / "sandbox.json"
        if not info.exists():
            raise SystemExit("sandbox mode (WECOM_SECRET unset): the sandbox is WeCom, and it runs inside "
                             "`uv run wecom-bot serve`: start that first")
        settings = settings.with_api_base(json.loads(info.read_text())["sandbox_url"] + "/cgi-bin/")
    return runtime_or_exit(settings, with_sandbox=False)


def _channels(rt: Runtime) -> ChannelFile:
    current = rt.content.channels if rt.content else None
    if current is None:
        raise SystemExit(f"no channels configured ({rt.settings.config_path}: content.channels)")
    return current


def cmd_sync(args: argparse.Namespace) -> int:
    """Create or update every channel's code on WeCom; exit 1 when one failed."""
    rt = _runtime(settings_or_exit())
    try:
        _channels(rt)
        from bot.wecom import WeComError

        try:
            done, tags_error = rt.channels(rt.wecom()).sync()
        except WeComError as exc:
            raise SystemExit(f"channels sync: {exc}") from None
    finally:
        rt.close()
    if args.json:
        for s in done:
            print(json.dumps({"channel": s.channel.id, "name": s.channel.name, "kind": s.channel.kind,
                              "action": s.action, "url": s.url, "error": s.error or None}, ensure_ascii=False))
    else:
        for s in done:
            tail = f"  {s.error}" if s.error else ("  (a new code: print it again)" if s.action == "replaced" else "")
            print(f"{s.channel.id:<16} {s.action:<9} {s.url}{tail}")
        counts = {a: sum(1 for s in done if s.action == a) for a in ACTIONS}
        print(f"{len(done)} channel(s): " + ", ".join(f"{n} {a}" for a, n in counts.items() if n))
    if tags_error:
        print(f"channel tags not synced ({tags_error}): customers get our tags, not WeCom corp tags", file=sys.stderr)
    return 1 if tags_error or any(s.action == "failed" for s in done) else 0


def _rows(current: ChannelFile, book: ChannelBook) -> list[dict[str, Any]]:
    """Each channel in YAML with its code, then the channels YAML no longer has but that brought customers."""
    ways = book.ways()
    rows = []
    for c in current.channels:
        way = ways.get(c.id)
        rows.append({"channel": c.id, "name": c.name, "kind": c.kind, "routes_to": list(c.staff) or [c.kf],
                     "tags": list(c.tags), "journey": c.journey or None, "url": way.url if way else None,
                     "synced": bool(way and way.fingerprint == c.fingerprint()), "in_yaml": True})
    listed = {r["channel"] for r in rows}
    for cid in sorted((set(ways) | set(book.seen_channels())) - listed):
        way = ways.get(cid)
        rows.append({"channel": cid, "name": (way.name if way else "") or ("未知渠道" if cid == UNKNOWN else cid),
                     "kind": way.kind if way else None, "routes_to": [], "tags": [], "journey": None,
                     "url": way.url if way else None, "synced": False, "in_yaml": False})
    return rows


def cmd_list(args: argparse.Namespace) -> int:
    """Every channel with its QR code / link (sync first for the codes)."""
    rt = runtime_or_exit(settings_or_exit(), with_sandbox=False)
    try:
        rows = _rows(_channels(rt), rt.channel_book)
    finally:
        rt.close()
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return 0
    for row in rows:
        state = ("" if row["in_yaml"] else "（已从 YAML 移除，保留历史）") or ("" if row["synced"] else
                                                                  "（未同步：运行 wecom-bot channels sync）")
        print(f"{row['channel']:<16} {row['name']}  {row['url'] or '-'}{state}")
    return 0


def period(text_from: str | None, text_to: str | None, days: int, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) from --from/--to (local dates or ISO times) or the last `days` days up to now."""
    tz = now.tzinfo if isinstance(now.tzinfo, ZoneInfo) else None
    end = parse_at(text_to, tz) if text_to and tz else now
    start = parse_at(text_from, tz) if text_from and tz else end - timedelta(days=days)
    if start >= end:
        raise ValueError(f"--from {start:%Y-%m-%d %H:%M} is not before --to {end:%Y-%m-%d %H:%M}")
    return start, end


def cmd_stats(args: argparse.Namespace) -> int:
    """Per channel over a period: added, replied within 24 h, coupon, redeemed, purchased, unsubscribed, lost."""
    rt = runtime_or_exit(settings_or_exit(), with_sandbox=False)
    try:
        tz = rt.settings.timezone
        try:
            start, end = period(args.from_, args.to, args.days, datetime.fromtimestamp(rt.clock(), tz))
        except ValueError as exc:
            raise SystemExit(f"bad input: {exc}") from None
        current = rt.content.channels if rt.content else None
        rows = channel_stats(rt.channel_book, current, start, end)
        names = {c.id: c.name for c in current.channels} if current else {}
        names.update({cid: w.name for cid, w in rt.channel_book.ways().items() if cid not in names and w.name})
        earned = rt.channel_book.earned(start, end)
    finally:
        rt.close()
    if args.json:
        print(json.dumps({"from": start.isoformat(), "to": end.isoformat(),
                          "channels": [{**s.as_json(), "name": names.get(s.channel, "未知渠道" if s.channel == UNKNOWN
                                                                           else s.channel)} for s in rows],
                          "touches": [{"touch": ref, "orders": int(e["orders"]), "amount": round(e["amount"], 2)}
                                      for ref, e in earned.items()]},
                         ensure_ascii=False))
        return 0
    print(f"customers added from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}, and what they did since "
          f"(replied: within 24 h; % of added)")
    print(f"{_pad('channel', 20)} {'added':>6} {'replied':>9} {'coupon':>9} {'redeemed':>9} {'bought':>9} "
          f"{'orders':>6} {'amount':>10} {'unsub':>8} {'lost':>8}")
    for s in rows:
        name = names.get(s.channel, "未知渠道" if s.channel == UNKNOWN else s.channel)
        rates = [_pct(n, s.added) for n in (s.replied, s.coupon, s.redeemed, s.purchased)]
        print(f"{_pad(name, 20)} {s.added:>6} " + " ".join(f"{x:>9}" for x in rates) +
              f" {s.orders:>6} {s.amount:>10.2f} {_pct(s.unsubscribed, s.added):>8} {_pct(s.lost, s.added):>8}")
    if earned:
        print("\npurchases credited to the last touch or coupon before them (within attribution_hours):")
        for ref, e in earned.items():
            print(f"  {ref:<40} {int(e['orders']):>6} orders {e['amount']:>10.2f}")
    return 0


def _pct(n: int, of: int) -> str:
    return f"{n}" if not of else f"{n} {n * 100 // of}%"


def _pad(text: str, width: int) -> str:
    """`text` padded to `width` terminal columns (a CJK character takes two)."""
    shown = sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
    return text + " " * max(0, width - shown)


def register(sub: Any) -> None:
    """Add `channels` to the wecom-bot subparsers."""
    ch = sub.add_parser("channels", help="渠道活码: validate, sync the codes to WeCom, list them, stats per channel")
    ch_sub = ch.add_subparsers(dest="channels_command", required=True)
    v = ch_sub.add_parser("validate", help="check channels YAML (file:line: key: message)")
    v.add_argument("path", nargs="?", help="a channels file (default: config.yaml content.channels)")
    v.set_defaults(func=cmd_validate)
    s = ch_sub.add_parser("sync", help="create or update each channel's QR code / kf link on WeCom (idempotent)")
    s.add_argument("--json", action="store_true", help="one object per channel: channel, name, kind, action, url, error")
    s.set_defaults(func=cmd_sync)
    ls = ch_sub.add_parser("list", help="each channel with its QR code / link")
    ls.add_argument("--json", action="store_true", help="one object per channel")
    ls.set_defaults(func=cmd_list)
    st = ch_sub.add_parser("stats", help="per channel: added, replied within 24 h, coupon issued and redeemed, "
                                         "purchased (count and amount), unsubscribed, lost")
    st.add_argument("--from", dest="from_", metavar="WHEN", help="start (local date or ISO time); default --days ago")
    st.add_argument("--to", metavar="WHEN", help="end, exclusive (default now)")
    st.add_argument("--days", type=int, default=30, help="without --from: the last N days (default 30)")
    st.add_argument("--json", action="store_true", help="one object: from, to, channels [{channel, name, added, ...}]")
    st.set_defaults(func=cmd_stats)

