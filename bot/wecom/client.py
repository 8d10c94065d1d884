"""WeCom over HTTP: wechatpy's client for transport and token, our retry policy, kf endpoints it lacks."""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import redis
import requests
from wechatpy.enterprise import WeChatClient
from wechatpy.exceptions import WeChatClientException
from wechatpy.session.redisstorage import RedisStorage

from bot.observe import observe_wecom_call
from bot.wecom import (
    CONFIG_HINTS,
    WELCOME_TEXT_MAX_BYTES,
    ContactWay,
    KfBatch,
    MassTask,
    WeComConfigError,
    WeComError,
    WeComRateLimited,
    clip,
    http,
)

log = logging.getLogger(__name__)

TOKEN_ERRORS = {40001, 40014, 42001}  # on an API call: refresh the access token once and retry
IP_NOT_TRUSTED = 60020
# Calls that must not be repeated when it is unclear whether WeCom did them (timeout, 5xx):
# a second task, alert or robot message would reach people twice. kf/send_msg carries our msgid, and a
# message/send body with enable_duplicate_check is dropped by WeCom when it is the same as one just sent.
NOT_IDEMPOTENT = {"message/send", "externalcontact/add_msg_template", "webhook/send"}
BACKOFF_ERRORS = {-1, 45009, 45033}  # busy / rate limited: wait and retry
BACKOFF = (0.2, 0.6, 1.5)
MEMO_SECONDS = 30.0  # how long a process reuses the access token it read from Redis without reading it again


class _Client(WeChatClient):
    """wechatpy's enterprise client with a configurable base URL and a secret-free token key."""

    def __init__(self, corp_id: str, secret: str, base_url: str, session: Any, timeout: float):
        self.API_BASE_URL = base_url
        super().__init__(corp_id, secret, session=session, timeout=timeout, auto_retry=False)
        self._http = http.Session()  # in place of wechatpy's requests.Session

    _memo: tuple[str, float] = ("", 0.0)  # the token as last read from Redis, and until when it is reused

    @property
    def access_token(self) -> str:
        """The shared token, reread from Redis at most every MEMO_SECONDS (another process may refresh it)."""
        token, until = self._memo
        if token and time.monotonic() < until:
            return token
        token = str(super().access_token or "")
        self._memo = (token, time.monotonic() + MEMO_SECONDS)
        return token

    def forget_token(self) -> None:
        """WeCom refused the token: drop it here and in Redis, so the next call fetches a new one."""
        self._memo = ("", 0.0)
        self.session.delete(self.access_token_key)

    @property
    def access_token_key(self) -> str:
        return f"{self.corp_id}_{hashlib.sha256(self.secret.encode()).hexdigest()[:12]}_access_token"

    def fetch_access_token(self) -> dict[str, Any]:
        """gettoken at the configured base (wechatpy hardcodes the host and passes no timeout)."""
        started = time.perf_counter()
        res = self._http.get(f"{self.API_BASE_URL}gettoken", timeout=self.timeout,
                             params={"corpid": self.corp_id, "corpsecret": self.secret})
        observe_wecom_call("gettoken", (res.json().get("errcode") or 0) if res.status_code < 500 else None,
                           time.perf_counter() - started)
        result = res.json() if res.status_code < 500 else {"errcode": None, "errmsg": f"HTTP {res.status_code}"}
        if result.get("errcode") or "access_token" not in result:
            raise WeChatClientException(result.get("errcode"), result.get("errmsg", ""), client=self, response=res)
        expires_in = int(result.get("expires_in") or 7200)
        self.session.set(self.access_token_key, result["access_token"], expires_in)
        self.expires_at = int(time.time()) + expires_in
        return result


class WechatpyWeCom:
    """The WeCom interface on top of wechatpy 1.8.18."""

    def __init__(self, corp_id: str, secret: str, agent_id: int, base_url: str,
                 r: redis.Redis, timeout: float = 5.0, sleep: Any = time.sleep):
        self.agent_id = agent_id
        self._sleep = sleep
        self._client = _Client(corp_id, secret, base_url, RedisStorage(r, prefix="wecom:token"), timeout)

    def _token(self) -> None:
        try:
            self._client.access_token  # noqa: B018 - fetches when missing
        except WeChatClientException as exc:
            code = _code(exc)
            if code in CONFIG_HINTS:
                raise WeComConfigError(code, CONFIG_HINTS[code], "gettoken") from None
            raise WeComError(code, str(exc.errmsg or exc), "gettoken") from None
        except requests.RequestException as exc:  # its text holds the URL, corpsecret included
            raise WeComError(None, f"cannot reach WeCom: {exc.__class__.__name__}", "gettoken") from None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One API call: one token refresh on 40014/42001, backoff on busy/limits/5xx/network."""
        refreshed = False
        attempt = 0
        repeatable = path not in NOT_IDEMPOTENT or bool((body or {}).get("enable_duplicate_check"))
        while True:
            self._token()
            started = time.perf_counter()
            try:
                kwargs: dict[str, Any] = {"params": dict(params or {}), "once": not repeatable}  # to http.Session
                if body is not None:
                    kwargs["data"] = body
                result = self._client.get(path, **kwargs) if method == "GET" else self._client.post(path, **kwargs)
                observe_wecom_call(path, 0, time.perf_counter() - started)
                return result if isinstance(result, dict) else {}
            except WeChatClientException as exc:
                code, msg = _code(exc), str(exc.errmsg or "")
                observe_wecom_call(path, code, time.perf_counter() - started)
                if code in TOKEN_ERRORS and not refreshed:
                    refreshed = True
                    self._client.forget_token()
                    continue
                if code == IP_NOT_TRUSTED:
                    raise WeComConfigError(code, CONFIG_HINTS[code], path) from None
                retryable = code in BACKOFF_ERRORS or (code is None and _server_error(exc) and repeatable)
                if not retryable:
                    raise WeComError(code, msg or "HTTP error", path) from None
                error: WeComError = (WeComRateLimited if code in (45009, 45033) else WeComError)(code, msg, path)
            except requests.RequestException as exc:
                observe_wecom_call(path, None, time.perf_counter() - started)
                error = WeComError(None, f"network: {exc.__class__.__name__}", path)
                if not repeatable and not isinstance(exc, requests.ConnectionError | requests.ConnectTimeout):
                    raise error from None  # the request may have been done: do not repeat it
            if attempt >= len(BACKOFF):
                raise error
            log.info("wecom %s: %s; retrying in %.1fs", path, error, BACKOFF[attempt])
            self._sleep(BACKOFF[attempt])
            attempt += 1

    def sync_kf(self, token: str, open_kfid: str, cursor: str, limit: int = 1000) -> KfBatch:
        body = {"cursor": cursor, "token": token, "limit": limit, "voice_format": 0, "open_kfid": open_kfid}
        if not token:
            body.pop("token")
        res = self.call("POST", "kf/sync_msg", body)
        return KfBatch(list(res.get("msg_list") or []), str(res.get("next_cursor") or cursor),
                       bool(res.get("has_more")))

    def send_kf(self, open_kfid: str, customer: str, msgid: str, payload: dict[str, Any]) -> str:
        res = self.call("POST", "kf/send_msg", {"touser": customer, "open_kfid": open_kfid, "msgid": msgid, **payload})
        return str(res.get("msgid") or msgid)

    def send_kf_on_event(self, code: str, msgid: str, payload: dict[str, Any]) -> str:
        res = self.call("POST", "kf/send_msg_on_event", {"code": code, "msgid": msgid, **payload})
        return str(res.get("msgid") or msgid)

    def service_state(self, open_kfid: str, customer: str) -> tuple[int, str]:
        res = self.call("POST", "kf/service_state/get", {"open_kfid": open_kfid, "external_userid": customer})
        return int(res.get("service_state") or 0), str(res.get("servicer_userid") or "")

    def trans_service_state(self, open_kfid: str, customer: str, state: int, servicer: str = "") -> str:
        body: dict[str, Any] = {"open_kfid": open_kfid, "external_userid": customer, "service_state": state}
        if servicer:
            body["servicer_userid"] = servicer
        return str(self.call("POST", "kf/service_state/trans", body).get("msg_code") or "")

    def servicers(self, open_kfid: str) -> dict[str, int]:
        res = self.call("GET", "kf/servicer/list", params={"open_kfid": open_kfid})
        return {s["userid"]: int(s.get("status", 1)) for s in res.get("servicer_list") or []}

    def send_app_message(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", "message/send", {"agentid": self.agent_id, **payload})

    def update_template_card(self, payload: dict[str, Any]) -> None:
        """Change the buttons of a sent template card (its response_code is single-use, valid 72 h)."""
        self.call("POST", "message/update_template_card", payload)

    def kf_customer_nickname(self, customer: str) -> str | None:
        """The customer's WeChat nickname (kf/customer/batchget), or None when WeCom has none."""
        res = self.call("POST", "kf/customer/batchget", {"external_userid_list": [customer]})
        return next((str(c["nickname"]) for c in res.get("customer_list") or [] if c.get("nickname")), None)

    def member_name(self, userid: str) -> str | None:
        """A member's name in the corp directory (user/get), or None when WeCom gives none."""
        res = self.call("GET", "user/get", params={"userid": userid})
        return str(res.get("name") or "") or None

    def send_welcome_msg(self, code: str, text: str) -> None:
        """The welcome message for a new contact, with the 20-second code of add_external_contact."""
        self.call("POST", "externalcontact/send_welcome_msg",
                  {"welcome_code": code, "text": {"content": clip(text, WELCOME_TEXT_MAX_BYTES, "")}})

    def mark_tag(self, staff: str, customer: str, tag_ids: list[str]) -> None:
        """Set corp tags on a customer, as seen by the staff member who has the contact."""
        self.call("POST", "externalcontact/mark_tag", {"userid": staff, "external_userid": customer, "add_tag": tag_ids})

    def add_msg_template(self, body: dict[str, Any]) -> MassTask:
        """A confirm-to-send mass task for a staff member (externalcontact/add_msg_template)."""
        res = self.call("POST", "externalcontact/add_msg_template", body)
        return MassTask(str(res.get("msgid") or ""), [str(c) for c in res.get("fail_list") or []])

    def add_contact_way(self, state: str, users: list[str], skip_verify: bool, remark: str) -> ContactWay:
        """A 「联系我」 QR code whose added customers carry `state` (type 1: one member, 2: several; scene 2: QR)."""
        res = self.call("POST", "externalcontact/add_contact_way",
                        {"type": 1 if len(users) == 1 else 2, "scene": 2, "state": state, "user": users,
                         "skip_verify": skip_verify, "remark": remark})
        return ContactWay(str(res.get("config_id") or ""), str(res.get("qr_code") or ""))

    def update_contact_way(self, config_id: str, state: str, users: list[str], skip_verify: bool,
                           remark: str) -> None:
        """Change who a QR code routes to, its state, verification and remark (the QR image stays)."""
        self.call("POST", "externalcontact/update_contact_way",
                  {"config_id": config_id, "state": state, "user": users, "skip_verify": skip_verify,
                   "remark": remark})

    def get_contact_way(self, config_id: str) -> dict[str, Any]:
        """A contact way as WeCom holds it (config_id, type, scene, state, user, qr_code, ...)."""
        res = self.call("POST", "externalcontact/get_contact_way", {"config_id": config_id})
        return dict(res.get("contact_way") or {})

    def kf_contact_way(self, open_kfid: str, scene: str) -> ContactWay:
        """The kf account's link for one scene; enter_session brings the scene back."""
        res = self.call("POST", "kf/add_contact_way", {"open_kfid": open_kfid, "scene": scene})
        return ContactWay("", str(res.get("url") or ""))

    def kf_account_ids(self) -> list[str]:
        """The corp's kf accounts (kf/account/list, first 100)."""
        res = self.call("POST", "kf/account/list", {"offset": 0, "limit": 100})
        return [str(a["open_kfid"]) for a in res.get("account_list") or [] if a.get("open_kfid")]

    def corp_tags(self) -> dict[str, str]:
        """Every corp tag: name -> tag id (externalcontact/get_corp_tag_list)."""
        res = self.call("POST", "externalcontact/get_corp_tag_list", {})
        return {str(t["name"]): str(t["id"]) for g in res.get("tag_group") or [] for t in g.get("tag") or []}

    def add_corp_tags(self, group: str, names: list[str]) -> dict[str, str]:
        """Create tags in a tag group (created when missing): name -> tag id."""
        res = self.call("POST", "externalcontact/add_corp_tag",
                        {"group_name": group, "tag": [{"name": n} for n in names]})
        return {str(t["name"]): str(t["id"]) for t in (res.get("tag_group") or {}).get("tag") or []}

    def send_robot(self, key: str, payload: dict[str, Any]) -> None:
        """The group robot: its key is the credential, so no access token (works when gettoken fails)."""
        try:
            res = self._client._http.post(f"{self._client.API_BASE_URL}webhook/send", params={"key": key},
                                          json=payload, timeout=self._client.timeout, once=True)
            body = res.json() if res.status_code < 500 else {"errcode": None, "errmsg": f"HTTP {res.status_code}"}
        except (requests.RequestException, ValueError) as exc:  # the URL carries the key: do not echo it
            raise WeComError(None, f"network: {exc.__class__.__name__}", "webhook/send") from None
        if body.get("errcode"):
            raise WeComError(_int(body.get("errcode")), str(body.get("errmsg", "")), "webhook/send")


def _code(exc: WeChatClientException) -> int | None:
    """The errcode of a wechatpy error as a number (None when there is none)."""
    return _int(exc.errcode)


def _int(value: Any) -> int | None:
    """An errcode as WeCom sent it (a number, or a numeric string) -> int; None when it is not one."""
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _server_error(exc: WeChatClientException) -> bool:
    response = getattr(exc, "response", None)
    return response is None or getattr(response, "status_code", 500) >= 500
