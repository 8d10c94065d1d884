"""Helpers the tests share that are not fixtures."""

from __future__ import annotations

from collections.abc import Iterable
from zoneinfo import ZoneInfo

import redis

from bot.queue.inbox import Inbox
from bot.records.customers import Customers
from sop.engine import Engine
from sop.journeys import Journey
from sop.plan import Rules


def engine_for(r: redis.Redis, journeys: Iterable[Journey], rules: Rules, tz: ZoneInfo) -> Engine:
    """An SOP engine wired as the runtime wires it: customers from Redis, touches into the inbox."""
    return Engine(r, journeys, rules, tz, customers=Customers(r), emit=Inbox(r).emit_touches)
