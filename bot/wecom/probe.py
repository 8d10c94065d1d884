"""Raw WeCom answers for `wecom-bot doctor`: no retry, no token cache, so it can say what exactly went wrong."""

from __future__ import annotations

from typing import Any

import requests

# (JSON body or None, error text, the HTTP response when there was one: its Date tells the clock skew)
Answer = tuple[dict[str, Any] | None, str, requests.Response | None]


class Probe:
    """One HTTP request per question, at the configured API base."""

    def __init__(self, base_url: str, timeout: float, secret: str | None) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.secret = secret  # never shown: taken out of error texts

    def gettoken(self, corp_id: str, secret: str) -> Answer:
        """gettoken with these credentials."""
        return self._call("GET", "gettoken", {"corpid": corp_id, "corpsecret": secret}, None)

    def kf_accounts(self, token: str) -> Answer:
        """kf/account/list: the 微信客服 accounts the app may use."""
        return self._call("POST", "kf/account/list", {"access_token": token}, {"offset": 0, "limit": 100})

    def kf_servicers(self, token: str, open_kfid: str) -> Answer:
        """kf/servicer/list: who receives (status 0) on one kf account."""
        return self._call("GET", "kf/servicer/list", {"access_token": token, "open_kfid": open_kfid}, None)

    def _call(self, method: str, path: str, params: dict[str, Any], body: Any) -> Answer:
        url = self.base_url + path
        try:
            resp = requests.request(method, url, params=params, json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            detail = str(exc).replace(self.secret or "\0", "***")  # the URL carries corpsecret
            return None, f"cannot reach {self.base_url}: {exc.__class__.__name__}: {detail}", None
        try:
            return resp.json(), "", resp
        except ValueError:
            return None, f"{url} answered HTTP {resp.status_code} without JSON", resp
