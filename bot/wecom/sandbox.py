"""A fake WeCom API server (kf, app messages, robot, gettoken) that records what it receives."""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bot.wecom.sandbox_contacts import ContactWays

TOKEN_TTL = 7200  # gettoken expires_in
CALLBACK_TOKEN_TTL = 600  # kf_msg_or_event Token is valid for 10 minutes
RETENTION = 3 * 86400  # sync_msg keeps only the last 3 days
WINDOW = 48 * 3600  # replies allowed within 48 h of the customer's last message
MAX_REPLIES = 5  # at most 5 replies per customer message
# What this sandbox answers to a reused kf msgid (WeCom's own code for it is not published).
MSGID_USED = {"errcode": 40058, "errmsg": "msgid already exists: a message with this msgid was sent"}
MSGID_RE = re.compile(r"^[0-9a-zA-Z_-]{1,32}$")  # send_msg msgid: <=32 bytes of [0-9a-zA-Z_-]
# service_state/trans: allowed moves (3 -> 3 means transfer to another servicer)
TRANSITIONS = {0: {1, 2, 3}, 1: {2, 3}, 2: {3}, 3: {3, 4}, 4: set()}
PAYLOAD_KEYS = ("text", "image", "voice", "video", "file", "link", "miniprogram", "msgmenu",
                "location", "business_card", "ca_link", "markdown", "textcard", "template_card", "news")

GET_ENDPOINTS = {"/cgi-bin/kf/servicer/list", "/cgi-bin/user/get"}
# servicer_status_change reports 1 receiving / 2 stopped; kf/servicer/list says 0 receiving / 1 stopped
SERVICER_EVENT_STATUS = {1: 0, 2: 1}

Json = dict[str, Any]


def err(code: int, msg: str, **extra: Any) -> Json:
    """A WeCom-style error body."""
    return {"errcode": code, "errmsg": msg, **extra}


def ok(**extra: Any) -> Json:
    """A WeCom-style success body."""
    return {"errcode": 0, "errmsg": "ok", **extra}


ROBOT_PER_MINUTE = 20


def norm_path(path: str) -> str:
    """'kf/send_msg' -> '/cgi-bin/kf/send_msg'; absolute paths are kept."""
    return path if path.startswith("/") else "/cgi-bin/" + path.removeprefix("cgi-bin/")


class Sandbox:
    """In-process fake WeCom server on a daemon thread; one lock guards all state."""

    def __init__(self, corp_id: str = "wwsandbox0000000001", secret: str = "sandbox-secret",
                 open_kfid: str = "wkSandboxKf0000000000000000000001", host: str = "127.0.0.1",
                 port: int = 0, page_size: int = 1000, latency: float = 0.0) -> None:
        self.corp_id, self.secret, self.open_kfid = corp_id, secret, open_kfid
        self.host, self.port, self.page_size = host, port, page_size
        self.latency = latency  # seconds each API call waits before it is served (outside the lock), like WeCom
        self.url = ""
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._offset = 0.0
        self.contacts = ContactWays()
        self.reset()
        ways = self.contacts
        self._api: dict[str, Callable[[Any, dict[str, str]], Json]] = {
            "/cgi-bin/kf/sync_msg": self._sync_msg,
            "/cgi-bin/kf/send_msg": self._send_msg,
            "/cgi-bin/kf/send_msg_on_event": self._send_msg_on_event,
            "/cgi-bin/kf/service_state/get": self._state_get,
            "/cgi-bin/kf/service_state/trans": self._state_trans,
            "/cgi-bin/kf/servicer/list": self._servicer_list,
            "/cgi-bin/user/get": self._user_get,
            "/cgi-bin/message/send": self._message_send,
            "/cgi-bin/message/update_template_card": self._update_card,
            "/cgi-bin/externalcontact/mark_tag": self._accept,
            "/cgi-bin/kf/customer/batchget": self._customer_batchget,
            "/cgi-bin/externalcontact/send_welcome_msg": self._send_welcome_msg,
            "/cgi-bin/externalcontact/add_msg_template": self._add_msg_template,
            "/cgi-bin/externalcontact/add_contact_way": lambda d, q: ways.add(d),
            "/cgi-bin/externalcontact/update_contact_way": lambda d, q: ways.update(d),
            "/cgi-bin/externalcontact/get_contact_way": lambda d, q: ways.get(d),
            "/cgi-bin/externalcontact/del_contact_way": lambda d, q: ways.delete(d),
            "/cgi-bin/externalcontact/get_corp_tag_list": lambda d, q: ways.tag_list(d),
            "/cgi-bin/externalcontact/add_corp_tag": lambda d, q: ways.tag_add(d),
            "/cgi-bin/kf/add_contact_way": lambda d, q: ways.kf_add(d, self._known_kfid(d.get("open_kfid"))),
            "/cgi-bin/kf/account/list": lambda d, q: ok(account_list=[
                {"open_kfid": k, "name": "沙盒客服", "avatar": ""} for k in sorted({self.open_kfid, *self._messages})]),
        }
        self._control: dict[str, Callable[[Json, dict[str, str]], Json]] = {
            "/sandbox/customer/text": self._ctl_customer,
            "/sandbox/staff/text": self._ctl_staff,
            "/sandbox/event": self._ctl_event,
            "/sandbox/outbox": self._ctl_outbox,
            "/sandbox/script": self._ctl_script,
            "/sandbox/servicers": self._ctl_servicers,
            "/sandbox/reset": self._ctl_reset,
            "/sandbox/state": self._ctl_state,
            "/sandbox/contact_way": lambda d, q: ways.by_state(str(d.get("state") or q.get("state") or "")),
            "/sandbox/scan": lambda d, q: self.scan(str(d["state"]), str(d["external_userid"])),
        }

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Bind and serve on a daemon thread; returns self."""
        self._server = ThreadingHTTPServer((self.host, self.port), _make_handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="wecom-sandbox", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget everything: messages, requests, scripts, tokens, states, servicers, clock offset."""
        with self._lock:
            self._messages: dict[str, list[Json]] = {}
            self._requests: list[Json] = []
            self._delivered: list[Json] = []
            self._delivered_ids: set[str] = set()
            self._staff: list[Json] = []
            self._outbox: list[Json] = []
            self._scripts: dict[str, list[Json]] = {}
            self._faults: dict[str, list[tuple[str, float]]] = {}  # path -> (mode, seconds), performed first
            self._app_sent: dict[str, tuple[float, str]] = {}  # duplicate-checked body -> (at, msgid)
            self._tokens: dict[str, float] = {}  # access_token -> expiry
            self._current_token = ""
            self._callback_tokens: dict[str, float] = {}  # sync token -> expiry
            self._sessions: dict[tuple[str, str], Json] = {}
            self._codes: dict[str, tuple[Any, Any]] = {}  # msg/welcome code -> (open_kfid, customer)
            self._servicers: dict[str, int] = {}
            self._names: dict[str, str] = {}  # member userid -> name (user/get)
            self._offset = 0.0
            self.contacts.reset()

    # ---- clock -----------------------------------------------------------------------------

    def now(self) -> float:
        """Sandbox time: wall clock plus advance()."""
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the sandbox clock forward (token expiry, 48 h window, 3-day retention)."""
        with self._lock:
            self._offset += seconds

    # ---- scripting the customer side ---------------------------------------------------------

    def add_customer_text(self, external_userid: str, text: str, open_kfid: str | None = None) -> str:
        """Append an origin=3 customer text; returns its msgid."""
        return self.add_customer_message(external_userid, "text", {"content": text}, open_kfid)

    def add_customer_message(self, external_userid: str, msgtype: str, payload: Json,
                             open_kfid: str | None = None) -> str:
        """Append an origin=3 customer message of any type (image: {"media_id"}, ...); returns its msgid."""
        kfid = open_kfid or self.open_kfid
        with self._lock:
            s = self._session(kfid, external_userid)
            if s["state"] == 4:  # the next customer message resets an ended session to 0
                s.update(state=0, servicer="")
            s.update(last_customer=self.now(), replies=0)
            return self._append(kfid, {"open_kfid": kfid, "external_userid": external_userid, "origin": 3,
                                       "msgtype": msgtype, msgtype: payload}, "from_msgid_")

    def add_staff_text(self, external_userid: str, servicer_userid: str, text: str,
                       open_kfid: str | None = None) -> str:
        """Append an origin=5 text typed by a servicer in the WeCom client; returns its msgid."""
        kfid = open_kfid or self.open_kfid
        with self._lock:
            return self._append(kfid, {"open_kfid": kfid, "external_userid": external_userid, "origin": 5,
                                       "servicer_userid": servicer_userid, "msgtype": "text",
                                       "text": {"content": text}}, "servicer_msgid_")

    def add_event(self, event: Json, open_kfid: str | None = None) -> str:
        """Append an origin=4 event (open_kfid is filled in); session events update the state, and
        servicer_status_change (status 1 receiving, 2 stopped) the servicer list."""
        kfid = open_kfid or event.get("open_kfid") or self.open_kfid
        event = {**event, "open_kfid": kfid}
        user = event.get("external_userid", "")
        with self._lock:
            if event.get("welcome_code"):
                self._codes[event["welcome_code"]] = (kfid, user)
            if event.get("msg_code"):
                self._codes[event["msg_code"]] = (kfid, user)
            if event.get("event_type") == "session_status_change" and user:
                s = self._session(kfid, user)
                if event.get("change_type") in (1, 2):  # picked up / transferred
                    s.update(state=3, servicer=event.get("new_servicer_userid", ""))
                elif event.get("change_type") == 3:  # ended
                    s.update(state=4, servicer="")
            servicer = event.get("servicer_userid")
            if event.get("event_type") == "servicer_status_change" and servicer in self._servicers:
                self._servicers[servicer] = SERVICER_EVENT_STATUS.get(int(event.get("status") or 0),
                                                                   self._servicers[servicer])
            return self._append(kfid, {"origin": 4, "msgtype": "event", "event": event}, "evt_")

    def callback_token(self) -> str:
        """A fresh sync token, as carried by the kf_msg_or_event callback."""
        token = "ENC" + secrets.token_urlsafe(24)
        with self._lock:
            self._callback_tokens[token] = self.now() + CALLBACK_TOKEN_TTL
        return token

    def set_service_state(self, external_userid: str, state: int, servicer: str = "",
                          open_kfid: str | None = None) -> None:
        """Force a session state (no transition check)."""
        with self._lock:
            self._session(open_kfid or self.open_kfid, external_userid).update(state=state, servicer=servicer)

    def service_state(self, external_userid: str, open_kfid: str | None = None) -> int:
        """Current session state of a customer."""
        with self._lock:
            return self._session(open_kfid or self.open_kfid, external_userid)["state"]

    def set_servicers(self, servicers: dict[str, int], names: dict[str, str] | None = None) -> None:
        """Replace the servicer list: userid -> status (0 receiving, 1 stopped); `names` as set_member_names."""
        with self._lock:
            self._servicers = dict(servicers)
        if names:
            self.set_member_names(names)

    def set_member_names(self, names: dict[str, str]) -> None:
        """Members' names as user/get answers them (userid -> name); other userids answer 60111."""
        with self._lock:
            self._names.update(names)

    def queue(self, path: str, response: Json, times: int = 1) -> None:
        """Answer the next `times` calls to `path` with `response` (key _http_status sets the status)."""
        with self._lock:
            self._scripts.setdefault(norm_path(path), []).extend(dict(response) for _ in range(times))

    def fault(self, path: str, mode: str, times: int = 1, seconds: float = 0.0) -> None:
        """The next `times` calls to `path` are performed, then their answer is lost: mode "lost" answers
        errcode -1, "http_502" an HTTP 502, "slow" waits `seconds` before the true answer (a client timeout),
        "broken" sends half of the answer and closes the connection."""
        if mode not in ("lost", "http_502", "slow", "broken"):
            raise ValueError(f"unknown fault mode {mode!r}")
        with self._lock:
            self._faults.setdefault(norm_path(path), []).extend((mode, seconds) for _ in range(times))

    def expire_tokens(self) -> None:
        """Every access_token issued so far now answers 42001."""
        with self._lock:
            self._tokens = {t: 0.0 for t in self._tokens}
            self._current_token = ""

    # ---- inspection ------------------------------------------------------------------------

    def requests(self, path: str | None = None) -> list[Json]:
        """Every API request received, in order (optionally only one path)."""
        with self._lock:
            want = norm_path(path) if path else None
            return [dict(r) for r in self._requests if want is None or r["path"] == want]

    def delivered(self) -> list[Json]:
        """Messages delivered to customers through send_msg and send_msg_on_event."""
        with self._lock:
            return [dict(m) for m in self._delivered]

    def staff_messages(self) -> list[Json]:
        """Accepted message/send bodies and group robot webhook bodies."""
        with self._lock:
            return [dict(m) for m in self._staff]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll `predicate` until it is true or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    # ---- internals -------------------------------------------------------------------------

    def _session(self, kfid: Any, user: Any) -> Json:
        return self._sessions.setdefault((kfid, user), {"state": 0, "servicer": "", "last_customer": None,
                                                        "replies": 0})

    def _append(self, kfid: str, msg: Json, prefix: str) -> str:
        msgid = prefix + secrets.token_hex(10)
        self._messages.setdefault(kfid, []).append({"msgid": msgid, "send_time": int(self.now()), **msg})
        return msgid

    def _record_out(self, kind: str, item: Json) -> None:
        (self._delivered if kind == "customer" else self._staff).append(item)
        self._outbox.append({"seq": len(self._outbox) + 1, "kind": kind, **item})

    def handle(self, method: str, raw_path: str, body: bytes) -> tuple[int, Json]:
        """Route one HTTP request; returns (status, JSON body)."""
        parts = urlsplit(raw_path)
        path, query = parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}
        try:
            data = json.loads(body) if body.strip() else None
        except ValueError:
            data = ...
        if self.latency > 0 and not path.startswith("/sandbox/"):
            time.sleep(self.latency)  # outside the lock: calls in flight overlap, as they do at WeCom
        with self._lock:
            if path.startswith("/sandbox/"):
                handler = self._control.get(path)
                if handler is None:
                    return 404, err(99999, f"sandbox: no handler for {path}")
                return 200, handler(data if isinstance(data, dict) else {}, query)
            self._requests.append({"method": method, "path": path, "query": query,
                                   "json": None if data is ... else data, "at": self.now()})
            if self._scripts.get(path):
                answer = self._scripts[path].pop(0)
                return int(answer.pop("_http_status", 200)), answer
            status, answer = 200, self._dispatch(path, query, data)
            mode, seconds = self._faults[path].pop(0) if self._faults.get(path) else ("", 0.0)
        if mode == "slow":
            time.sleep(seconds)  # outside the lock: the client gives up, the call was done
        elif mode == "lost":
            status, answer = 200, err(-1, "system busy")
        elif mode == "http_502":
            status, answer = 502, {}
        elif mode == "broken":
            answer = {**answer, BROKEN: True}
        return status, answer

    def _dispatch(self, path: str, query: dict[str, str], data: Any) -> Json:
        if path == "/cgi-bin/gettoken":
            return self._gettoken(query)
        if path == "/cgi-bin/webhook/send":
            return self._webhook(data, query)
        handler = self._api.get(path)
        if handler is None:
            return err(99999, f"sandbox: no handler for {path}")
        token = query.get("access_token")
        if not token:
            return err(41001, "access_token missing")
        if token not in self._tokens:
            return err(40014, "invalid access_token")
        if self._tokens[token] <= self.now():
            return err(42001, "access_token expired")
        if path not in GET_ENDPOINTS and not isinstance(data, dict):
            return err(47001, "data format error")
        return handler(data, query)

    def _gettoken(self, q: dict[str, str]) -> Json:
        if not q.get("corpid"):
            return err(41002, "corpid missing")
        if not q.get("corpsecret"):
            return err(41004, "corpsecret missing")
        if q["corpid"] != self.corp_id:
            return err(40013, "invalid corpid")
        if q["corpsecret"] != self.secret:
            return err(40001, "invalid credential")
        # repeated calls within the validity period return the same token
        if self._tokens.get(self._current_token, 0) <= self.now():
            self._current_token = secrets.token_urlsafe(48)
            self._tokens[self._current_token] = self.now() + TOKEN_TTL
        remaining = int(self._tokens[self._current_token] - self.now())
        return ok(access_token=self._current_token, expires_in=remaining)

    # ---- kf --------------------------------------------------------------------------------

    def _known_kfid(self, kfid: Any) -> bool:
        return bool(kfid) and (kfid == self.open_kfid or kfid in self._messages)

    def _sync_msg(self, d: Json, q: dict[str, str]) -> Json:
        kfid: Any = d.get("open_kfid")
        if not self._known_kfid(kfid):
            return err(95000, "invalid open_kfid")
        token: Any = d.get("token")
        if token and self._callback_tokens.get(token, 0) <= self.now():
            return err(95007, "invalid msg token")
        cursor = str(d.get("cursor") or "")
        if cursor and not re.fullmatch(r"sbx-\d+", cursor):
            return err(40058, "invalid cursor")
        msgs = self._messages.get(kfid, [])
        start = int(cursor[4:]) if cursor else 0
        oldest = self.now() - RETENTION
        while start < len(msgs) and msgs[start]["send_time"] < oldest:  # only the last 3 days
            start += 1
        limit = min(int(d.get("limit") or 1000), 1000, self.page_size)
        page = msgs[start:start + limit]
        end = start + len(page)
        return ok(next_cursor=f"sbx-{end}", has_more=int(end < len(msgs)), msg_list=[dict(m) for m in page])

    def _check_send(self, d: Json) -> Json | None:
        msgid, msgtype = d.get("msgid"), d.get("msgtype")
        if msgid is not None and not (isinstance(msgid, str) and MSGID_RE.match(msgid)):
            return err(40058, "invalid msgid: <=32 bytes of [0-9a-zA-Z_-]")
        if not msgtype or not isinstance(d.get(msgtype), dict):
            return err(40058, f"invalid msgtype or missing {msgtype or 'payload'}")
        if msgtype == "text" and len(str(d["text"].get("content", "")).encode()) > 2048:
            return err(45002, "content size out of limit")
        if msgtype == "msgmenu" and len(d["msgmenu"].get("list", [])) > 10:
            return err(95008, "msgmenu has too many items")
        return None

    def _deliver(self, d: Json, touser: Any, kfid: Any, **extra: Any) -> Json:
        msgid = d.get("msgid") or secrets.token_hex(16)
        if msgid in self._delivered_ids:
            return dict(MSGID_USED)
        self._delivered_ids.add(msgid)
        item = {"touser": touser, "open_kfid": kfid, "msgid": msgid, "msgtype": d["msgtype"], **extra,
                d["msgtype"]: d[d["msgtype"]], "at": self.now()}
        self._record_out("customer", item)
        return ok(msgid=msgid)

    def _send_msg(self, d: Json, q: dict[str, str]) -> Json:
        problem = self._check_send(d)
        if problem:
            return problem
        touser, kfid = d.get("touser"), d.get("open_kfid")
        if not touser:
            return err(40058, "touser missing")
        if not self._known_kfid(kfid):
            return err(95000, "invalid open_kfid")
        if d.get("msgid") in self._delivered_ids:
            return dict(MSGID_USED)
        s = self._session(kfid, touser)
        if s["state"] not in (0, 1):
            return err(95018, "session state does not allow sending")
        if s["last_customer"] is None or self.now() - s["last_customer"] > WINDOW:
            return err(95002, "send time limit: no customer message in the last 48h")
        if s["replies"] >= MAX_REPLIES:
            return err(95001, "send count limit: 5 messages per customer message")
        s["replies"] += 1
        return self._deliver(d, touser, kfid)

    def _send_msg_on_event(self, d: Json, q: dict[str, str]) -> Json:
        if not d.get("code"):
            return err(40058, "code missing")
        problem = self._check_send(d)
        if problem:
            return problem
        kfid, touser = self._codes.get(d["code"], (None, None))
        return self._deliver(d, touser, kfid, code=d["code"])

    def _state_get(self, d: Json, q: dict[str, str]) -> Json:
        if not self._known_kfid(d.get("open_kfid")):
            return err(95000, "invalid open_kfid")
        s = self._session(d["open_kfid"], d.get("external_userid", ""))
        return ok(service_state=s["state"], servicer_userid=s["servicer"])

    def _state_trans(self, d: Json, q: dict[str, str]) -> Json:
        kfid, user = d.get("open_kfid"), d.get("external_userid")
        if not self._known_kfid(kfid):
            return err(95000, "invalid open_kfid")
        if not user:
            return err(40096, "invalid external_userid")
        s, new, servicer = self._session(kfid, user), d.get("service_state"), d.get("servicer_userid", "")
        old = s["state"]
        if new not in TRANSITIONS[old] or (new == old == 3 and servicer == s["servicer"]):
            return err(95016, f"state transition {old} -> {new} not allowed")
        if new == 3 and servicer not in self._servicers:
            return err(95014, "user is not a servicer")
        if new == 3 and self._servicers[servicer] != 0:
            return err(95019, "servicer stopped receiving")
        s.update(state=new, servicer=servicer if new == 3 else "")
        if new == 1 or new == old == 3:  # msg_code only on the move to 2, 3 or 4, not on a transfer
            return ok()
        code = "MSGCODE" + secrets.token_hex(12)
        self._codes[code] = (kfid, user)
        return ok(msg_code=code)

    def _servicer_list(self, d: Any, q: dict[str, str]) -> Json:
        if not self._known_kfid(q.get("open_kfid")):
            return err(95000, "invalid open_kfid")
        return ok(servicer_list=[{"userid": u, "status": st} for u, st in self._servicers.items()])

    def _user_get(self, d: Any, q: dict[str, str]) -> Json:
        userid = q.get("userid") or ""
        if userid not in self._names:
            return err(60111, "userid not found")
        return ok(userid=userid, name=self._names[userid], status=1)

    # ---- staff-side ------------------------------------------------------------------------

    def _message_send(self, d: Json, q: dict[str, str]) -> Json:
        if not d.get("msgtype") or not isinstance(d.get(d["msgtype"]), dict):
            return err(40058, "invalid msgtype or missing payload")
        check = json.dumps(d, sort_keys=True, ensure_ascii=False) if d.get("enable_duplicate_check") else ""
        seen = self._app_sent.get(check) if check else None
        if seen and self.now() - seen[0] < float(d.get("duplicate_check_interval") or 1800):
            return ok(invaliduser="", invalidparty="", invalidtag="", msgid=seen[1])  # dropped as a duplicate
        answer = ok(invaliduser="", invalidparty="", invalidtag="", msgid=secrets.token_hex(16))
        if check:
            self._app_sent[check] = (self.now(), answer["msgid"])
        if d["msgtype"] == "template_card":
            answer["response_code"] = "RESPCODE" + secrets.token_hex(12)
        self._record_out("staff", {**d, "path": "/cgi-bin/message/send", "msgid": answer["msgid"],
                                   "response_code": answer.get("response_code"), "at": self.now()})
        return answer

    def _webhook(self, d: Any, q: dict[str, str]) -> Json:
        if not q.get("key"):
            return err(93000, "invalid webhook url")
        if not isinstance(d, dict):
            return err(47001, "data format error")
        # A group robot takes at most 20 messages a minute; past that WeCom answers 45009.
        minute = int(self.now() // 60)
        sent = sum(1 for m in self._staff if m.get("key") == q["key"] and int(m.get("at", 0) // 60) == minute)
        if sent >= ROBOT_PER_MINUTE:
            return err(45009, "api freq out of limit")
        self._record_out("staff", {**d, "path": "/cgi-bin/webhook/send", "key": q["key"], "at": self.now()})
        return ok()

    def _accept(self, d: Json, q: dict[str, str]) -> Json:
        return ok()

    def _update_card(self, d: Json, q: dict[str, str]) -> Json:
        self._record_out("staff", {**d, "touser": "|".join(d.get("userids") or []), "msgtype": "update_template_card",
                                   "path": "/cgi-bin/message/update_template_card", "at": self.now()})
        return ok()

    def _customer_batchget(self, d: Json, q: dict[str, str]) -> Json:
        ids = [u for u in d.get("external_userid_list") or [] if isinstance(u, str)]
        return ok(customer_list=[{"external_userid": u, "nickname": f"沙盒客户{u[-4:]}", "gender": 0}
                                 for u in ids], invalid_external_userid=[])

    def _send_welcome_msg(self, d: Json, q: dict[str, str]) -> Json:
        """A welcome code of a scan() is single-use and reaches its customer; other codes are only accepted."""
        code = d.get("welcome_code")
        if not code:
            return err(41049, "welcome_code missing")
        if code in self._codes and self._codes[code][0] == "welcome":
            _, customer = self._codes.pop(code)
            self._record_out("customer", {"touser": customer, "msgtype": "text", "via": "send_welcome_msg",
                                          "text": d.get("text") or {}, "at": self.now()})
        return ok()

    def scan(self, state: str, external_userid: str) -> Json:
        """A customer scans the code carrying `state`: a staff code answers the add_external_contact fields
        (with a fresh welcome code), a kf link appends enter_session with its scene (and answers the sync
        token); {"kind": ""} when no code carries it."""
        with self._lock:
            way = self.contacts.by_state(state)
            code = "WC" + secrets.token_hex(8)
            if way["kind"] == "staff":
                self._codes[code] = ("welcome", external_userid)
                return {**way, "UserID": way["user"][0], "ExternalUserID": external_userid, "State": state,
                        "WelcomeCode": code, "corp_id": self.corp_id}
            if way["kind"] == "kf":
                self.add_event({"event_type": "enter_session", "external_userid": external_userid, "scene": state,
                                "welcome_code": code}, way["open_kfid"])
                return {**way, "token": self.callback_token(), "corp_id": self.corp_id}
            return way

    def _add_msg_template(self, d: Json, q: dict[str, str]) -> Json:
        return ok(fail_list=[], msgid="msg" + secrets.token_hex(12))

    # ---- control endpoints (for `wecom-bot chat`) --------------------------------------------

    def _inbound_reply(self, msgid: str, d: Json) -> Json:
        return {"msgid": msgid, "token": self.callback_token(), "open_kfid": d.get("open_kfid") or self.open_kfid,
                "corp_id": self.corp_id}

    def _ctl_customer(self, d: Json, q: dict[str, str]) -> Json:
        msgid = self.add_customer_text(d["external_userid"], d["text"], d.get("open_kfid"))
        return self._inbound_reply(msgid, d)

    def _ctl_staff(self, d: Json, q: dict[str, str]) -> Json:
        msgid = self.add_staff_text(d["external_userid"], d["servicer_userid"], d["text"], d.get("open_kfid"))
        return self._inbound_reply(msgid, d)

    def _ctl_event(self, d: Json, q: dict[str, str]) -> Json:
        return self._inbound_reply(self.add_event(d["event"], d.get("open_kfid")), d)

    def _ctl_outbox(self, d: Json, q: dict[str, str]) -> Json:
        since = int(q.get("since") or 0)
        items = [dict(i) for i in self._outbox[since:]]
        return {"next": len(self._outbox), "items": items}

    def _ctl_script(self, d: Json, q: dict[str, str]) -> Json:
        self.queue(d["path"], d["response"], int(d.get("times", 1)))
        return {"ok": True}

    def _ctl_servicers(self, d: Json, q: dict[str, str]) -> Json:
        self.set_servicers(d["servicers"], d.get("names"))
        return {"ok": True}

    def _ctl_reset(self, d: Json, q: dict[str, str]) -> Json:
        self.reset()
        return {"ok": True}

    def _ctl_state(self, d: Json, q: dict[str, str]) -> Json:
        return {"corp_id": self.corp_id, "open_kfid": self.open_kfid,
                "messages": sum(len(m) for m in self._messages.values()), "requests": len(self._requests),
                "delivered": len(self._delivered), "staff_messages": len(self._staff),
                "outbox": len(self._outbox), "servicers": dict(self._servicers),
                "sessions": [{"open_kfid": k, "external_userid": u, "service_state": s["state"],
                              "servicer_userid": s["servicer"], "replies": s["replies"]}
                             for (k, u), s in self._sessions.items()]}


BROKEN = "_sandbox_broken"  # in an answer: send it broken off (fault mode "broken")


def _make_handler(sandbox: Sandbox) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to `sandbox`."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in separate writes

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                status, answer = sandbox.handle(self.command, self.path, body)
            except (KeyError, TypeError, ValueError) as exc:  # bad control-endpoint input
                status, answer = 400, err(40058, f"sandbox: bad request: {exc!r}")
            broken = bool(answer.pop(BROKEN, False))
            data = json.dumps(answer, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if broken:  # the answer breaks off: half of it, then the connection closes
                data, self.close_connection = data[:len(data) // 2], True
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout fault)
                pass

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: requests are recorded in Sandbox.requests() instead."""

    return Handler
