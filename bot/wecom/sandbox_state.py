"""The sandbox of `wecom-bot serve`, kept across restarts: its state in a JSON file, its cursors tagged by epoch.

Redis (under var/) outlives a `serve` run, and so must what the fake WeCom holds: otherwise the kf cursor
saved in Redis (sbx-49) points past the end of a new, empty sandbox and sync_msg answers nothing until the
new run passes 49 messages. Two guards:

- the state (messages, sessions, delivered msgids, outbox, codes, tokens, servicers, clock offset) is
  written atomically to a JSON file before each answer that changed it and on stop, and read at start;
- cursors carry the epoch of the message list they index (sbx-<epoch>-<n>); a new epoch starts on reset
  or when no state file was kept. A cursor of another epoch (or an old "sbx-49") is read from the start
  of what this sandbox holds: those messages are new to the bot (the old ones went with the old state),
  so nothing is dropped, and nothing is answered twice (same epoch: the cursor is exact).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import Any

from bot.wecom.sandbox import Json, Sandbox, err

log = logging.getLogger("bot.wecom.sandbox")

STATE_VERSION = 1
CURSOR_RE = re.compile(r"sbx-([0-9a-f]+)-(\d+)")
# kept as they are in JSON; what is not listed (requests, scripts, faults) is test scaffolding, not kept
PLAIN = ("_messages", "_delivered", "_staff", "_outbox", "_tokens", "_current_token", "_callback_tokens",
         "_servicers", "_names", "_offset")
TUPLES = ("_app_sent", "_codes")  # dict of key -> tuple


class DurableSandbox(Sandbox):
    """A Sandbox whose state survives a restart in `state_file` (None: in memory, cursors still tagged)."""

    def __init__(self, *args: Any, state_file: Path | None = None, **kw: Any) -> None:
        self.state_file = state_file
        self.restored = False  # state was read from state_file at start
        self._written = ""
        super().__init__(*args, **kw)

    def reset(self) -> None:
        """Forget everything; cursors of before the reset now read from the start."""
        with self._lock:
            super().reset()
            self.epoch = secrets.token_hex(4)

    def start(self) -> DurableSandbox:
        self.load()
        super().start()
        return self

    def stop(self) -> None:
        super().stop()
        self.save()

    def handle(self, method: str, raw_path: str, body: bytes) -> tuple[int, Json]:
        """As Sandbox.handle; what changed is on disk before the answer goes out."""
        answer = super().handle(method, raw_path, body)
        self.save()
        return answer

    # ---- the state file ----------------------------------------------------------------------

    def snapshot(self) -> Json:
        """Everything kept across a restart, as JSON-able data."""
        with self._lock:
            data: Json = {"version": STATE_VERSION, "epoch": self.epoch, "open_kfid": self.open_kfid}
            data.update({name: getattr(self, name) for name in PLAIN if hasattr(self, name)})
            data.update({name: {k: list(v) for k, v in getattr(self, name).items()} for name in TUPLES})
            data["_delivered_ids"] = sorted(self._delivered_ids)
            data["_sessions"] = [[k, u, s] for (k, u), s in self._sessions.items()]
            data["contacts"] = self.contacts.state()
            return data

    def save(self) -> None:
        """Write the state atomically when it changed since the last write (no state file: nothing)."""
        if self.state_file is None:
            return
        with self._lock:  # one writer at a time, in order: an older snapshot never replaces a newer one
            text = json.dumps(self.snapshot(), ensure_ascii=False, sort_keys=True)
            if text == self._written:
                return
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".sandbox-state.", dir=self.state_file.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.state_file)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self._written = text

    def load(self) -> bool:
        """Read the state file if there is one; False (and a fresh epoch) when there is none or it is unusable."""
        if self.state_file is None or not self.state_file.exists():
            return False
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            with self._lock:
                for name in PLAIN:
                    if name in data and hasattr(self, name):
                        setattr(self, name, data[name])
                for name in TUPLES:
                    setattr(self, name, {k: tuple(v) for k, v in (data.get(name) or {}).items()})
                self._delivered_ids = set(data.get("_delivered_ids") or [])
                self._sessions = {(k, u): s for k, u, s in data.get("_sessions") or []}
                self.contacts.restore(data.get("contacts") or {})
                self.epoch = str(data["epoch"])
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("sandbox: %s is unusable (%s); starting empty, a new epoch", self.state_file, exc)
            self.reset()
            return False
        self.restored = True
        self._written = ""
        return True

    # ---- cursors -----------------------------------------------------------------------------

    def _sync_msg(self, d: Json, q: dict[str, str]) -> Json:
        cursor = str(d.get("cursor") or "")
        found = CURSOR_RE.fullmatch(cursor)
        if found and found.group(1) == self.epoch:
            inner = f"sbx-{found.group(2)}"
        elif found or re.fullmatch(r"sbx-\d+", cursor):
            log.warning("sandbox: cursor %s is from another sandbox state (this one is epoch %s): "
                        "reading from the start of what this sandbox holds", cursor, self.epoch)
            inner = ""
        elif cursor:
            return err(40058, "invalid cursor")
        else:
            inner = ""
        answer = super()._sync_msg({**d, "cursor": inner}, q)
        if answer.get("next_cursor"):
            answer["next_cursor"] = f"sbx-{self.epoch}-{answer['next_cursor'][4:]}"
        return answer
