"""The HTTP transport of WeCom calls: libcurl (pycurl), one kept-alive handle per thread, shaped like the
requests.Session that wechatpy calls (about 80 µs of CPU a call; urllib3 took 300-400 µs, requests 0.7 ms
more); its errors are requests' own, so callers and wechatpy handle them as before."""

from __future__ import annotations

import json as jsonlib
import threading
from io import BytesIO
from typing import Any
from urllib.parse import urlencode

import certifi
import pycurl
import requests


class Response:
    """The part of requests.Response that wechatpy and bot/wecom/client.py read."""

    def __init__(self, status: int, content: bytes, headers: Any, url: str) -> None:
        self.status_code = status
        self.content = content
        self.headers = headers
        self.url = url
        self.request = None
        self.encoding = "utf-8"

    @property
    def text(self) -> str:
        return self.content.decode(self.encoding, "replace")

    def json(self) -> Any:
        """The body as JSON; not JSON (a proxy's error page): requests.JSONDecodeError, a RequestException."""
        try:
            return jsonlib.loads(self.content.decode("utf-8", "ignore"), strict=False)
        except jsonlib.JSONDecodeError as exc:
            raise requests.JSONDecodeError(exc.msg, exc.doc, exc.pos) from None

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise requests.HTTPError(f"HTTP {self.status_code}", response=self)  # type: ignore[arg-type]


USER_AGENT = "wecom-bot"


class Session:
    """request / get / post over libcurl; no retries here (bot/wecom/client.py decides)."""

    def __init__(self, ca_file: str | None = None) -> None:
        self._ca_file = ca_file or certifi.where()  # the wheels' built-in CA path is not Debian's
        self._local = threading.local()

    def _handle(self) -> pycurl.Curl:
        """This thread's handle: it keeps its connections alive between calls, and the options set here."""
        curl = getattr(self._local, "curl", None)
        if curl is None:
            curl = self._local.curl = pycurl.Curl()
            curl.setopt(pycurl.NOSIGNAL, 1)
            curl.setopt(pycurl.CAINFO, self._ca_file)
            curl.setopt(pycurl.PROXY, "")  # no proxy from http_proxy & co., as urllib3's pool before
            curl.setopt(pycurl.USERAGENT, USER_AGENT)
        return curl

    def request(self, method: str, url: str, params: dict[str, Any] | None = None, data: Any = None,
                json: Any = None, timeout: float | None = None, headers: dict[str, str] | None = None,
                once: bool = False) -> Response:
        """One call; `once`: it must not reach WeCom twice, so it goes on a new connection (libcurl sends a
        request again by itself when a reused connection dies before the answer)."""
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
        body = data
        headers = dict(headers or {})
        if json is not None:
            body = jsonlib.dumps(json, ensure_ascii=False).encode()
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
        curl, out = self._handle(), BytesIO()
        curl.setopt(pycurl.URL, url)
        curl.setopt(pycurl.WRITEDATA, out)
        headers.setdefault("Content-Type", "")  # none unless given, as before (libcurl would add a form's)
        curl.setopt(pycurl.HTTPHEADER, [f"{k}: {v}" if v else f"{k}:" for k, v in headers.items()] + ["Expect:"])
        curl.setopt(pycurl.FRESH_CONNECT, 1 if once else 0)
        if method.upper() == "GET":
            curl.setopt(pycurl.HTTPGET, 1)  # also drops an earlier call's body
        else:
            curl.setopt(pycurl.POSTFIELDS, body or b"")
        curl.setopt(pycurl.CUSTOMREQUEST, method.upper())
        curl.setopt(pycurl.TIMEOUT_MS, int(timeout * 1000) if timeout else 0)  # 0: none
        try:
            curl.perform()
        except pycurl.error as exc:
            raise _error(curl, exc.args[0], str(exc.args[1] if len(exc.args) > 1 else exc)) from None
        content_type = curl.getinfo(pycurl.CONTENT_TYPE)
        return Response(curl.getinfo(pycurl.RESPONSE_CODE), out.getvalue(),
                        {"Content-Type": content_type} if content_type else {}, url)

    def get(self, url: str, **kwargs: Any) -> Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> Response:
        return self.request("POST", url, **kwargs)


def _error(curl: pycurl.Curl, code: int, text: str) -> requests.RequestException:
    """A libcurl failure as the requests error that tells whether the call may have reached WeCom: only a call
    of which nothing was sent (REQUEST_SIZE counts every byte of this call's sends, resends included) is a
    ConnectionError or ConnectTimeout, which callers may repeat."""
    if not curl.getinfo(pycurl.REQUEST_SIZE):
        return requests.ConnectTimeout(text) if code == pycurl.E_OPERATION_TIMEDOUT else requests.ConnectionError(text)
    if code == pycurl.E_OPERATION_TIMEDOUT:
        return requests.ReadTimeout(text)
    return requests.exceptions.ChunkedEncodingError(text)  # sent, then broken off: it may be done
