"""The WeCom client against the sandbox: token sharing, one refresh, backoff, configuration errors."""

from __future__ import annotations

import pytest

from bot.config import SANDBOX_CORP_ID
from bot.wecom import WeComConfigError, WeComError, WeComRateLimited
from bot.wecom.client import WechatpyWeCom


def client(sandbox, r, secret="sandbox-secret", corp=SANDBOX_CORP_ID, sleeps=None):
    return WechatpyWeCom(corp, secret, 1000002, f"{sandbox.url}/cgi-bin/", r, timeout=5,
                         sleep=(sleeps.append if sleeps is not None else lambda s: None))


def test_token_is_shared_through_redis(sandbox, r):
    client(sandbox, r).servicers(sandbox.open_kfid)
    client(sandbox, r).servicers(sandbox.open_kfid)
    assert len(sandbox.requests("gettoken")) == 1


def test_one_refresh_on_expired_token_then_error_is_raised(sandbox, r):
    c = client(sandbox, r)
    c.servicers(sandbox.open_kfid)
    sandbox.queue("kf/servicer/list", {"errcode": 42001, "errmsg": "expired"}, times=1)
    c.servicers(sandbox.open_kfid)
    assert len(sandbox.requests("gettoken")) == 2
    sandbox.queue("kf/servicer/list", {"errcode": 40014, "errmsg": "invalid"}, times=2)
    with pytest.raises(WeComError) as err:
        c.servicers(sandbox.open_kfid)
    assert err.value.errcode == 40014
    assert len(sandbox.requests("gettoken")) == 3  # one refresh, no spin


def test_backoff_on_rate_limit_then_success(sandbox, r):
    sleeps: list[float] = []
    sandbox.queue("kf/servicer/list", {"errcode": 45009, "errmsg": "freq"}, times=2)
    assert client(sandbox, r, sleeps=sleeps).servicers(sandbox.open_kfid) == {}
    assert len(sleeps) == 2 and sleeps[0] < sleeps[1]


def test_rate_limit_that_persists_is_raised(sandbox, r):
    sandbox.queue("kf/servicer/list", {"errcode": 45009, "errmsg": "freq"}, times=10)
    with pytest.raises(WeComRateLimited):
        client(sandbox, r).servicers(sandbox.open_kfid)


@pytest.mark.parametrize("secret,corp,code,hint", [
    ("wrong-secret", SANDBOX_CORP_ID, 40001, "WECOM_SECRET"),
    ("sandbox-secret", "wwWrongCorp", 40013, "WECOM_CORP_ID"),
])
def test_gettoken_errors_are_configuration_errors_with_a_fix(sandbox, r, secret, corp, code, hint):
    with pytest.raises(WeComConfigError) as err:
        client(sandbox, r, secret=secret, corp=corp).servicers(sandbox.open_kfid)
    assert err.value.errcode == code and hint in str(err.value)


def test_untrusted_ip_is_explained(sandbox, r):
    sandbox.queue("gettoken", {"errcode": 60020, "errmsg": "not allow to access from your ip"})
    with pytest.raises(WeComConfigError) as err:
        client(sandbox, r).servicers(sandbox.open_kfid)
    assert "企业可信IP" in str(err.value)


def test_unreachable_wecom_is_a_wecom_error(r):
    from bot.redis_server import free_port

    c = WechatpyWeCom(SANDBOX_CORP_ID, "s", 1, f"http://127.0.0.1:{free_port()}/cgi-bin/", r, timeout=1,
                      sleep=lambda s: None)
    with pytest.raises(WeComError):
        c.servicers("wk")


def test_a_502_is_retried_for_a_repeatable_call(sandbox, r):
    sleeps: list[float] = []
    sandbox.fault("kf/servicer/list", "http_502")
    assert client(sandbox, r, sleeps=sleeps).servicers(sandbox.open_kfid) == {}
    assert len(sandbox.requests("kf/servicer/list")) == 2 and len(sleeps) == 1


def test_a_502_on_an_alert_is_not_repeated(sandbox, r):
    sandbox.fault("message/send", "http_502")
    with pytest.raises(WeComError) as err:
        client(sandbox, r).send_app_message({"touser": "zhangsan", "msgtype": "text", "text": {"content": "新客户"}})
    assert err.value.errcode is None and len(sandbox.requests("message/send")) == 1


def test_a_timeout_is_a_network_error_and_an_alert_is_not_sent_twice(sandbox, r):
    c = WechatpyWeCom(SANDBOX_CORP_ID, "sandbox-secret", 1000002, f"{sandbox.url}/cgi-bin/", r, timeout=0.3,
                      sleep=lambda s: None)
    c.servicers(sandbox.open_kfid)  # the token first
    sandbox.fault("message/send", "slow", seconds=1.0)
    with pytest.raises(WeComError) as err:
        c.send_app_message({"touser": "zhangsan", "msgtype": "text", "text": {"content": "新客户"}})
    assert "network: ReadTimeout" in str(err.value)
    assert len(sandbox.requests("message/send")) == 1


def test_the_group_robot_posts_json(sandbox, r):
    client(sandbox, r).send_robot("robot-key", {"msgtype": "text", "text": {"content": "待接待 3 位"}})
    sent = sandbox.requests("webhook/send")
    assert len(sent) == 1 and sent[0]["json"]["text"]["content"] == "待接待 3 位" and sent[0]["query"]["key"] == "robot-key"


def test_an_answer_that_breaks_off_is_not_a_reason_to_send_an_alert_again(sandbox, r):
    sandbox.fault("message/send", "broken")
    with pytest.raises(WeComError) as err:
        client(sandbox, r).send_app_message({"touser": "zhangsan", "msgtype": "text", "text": {"content": "新客户"}})
    assert "network: ChunkedEncodingError" in str(err.value)
    assert len(sandbox.requests("message/send")) == 1  # it may have been sent: not repeated


def test_an_answer_cut_short_on_gettoken_is_a_wecom_error(sandbox, r):
    sandbox.fault("gettoken", "broken")
    with pytest.raises(WeComError):
        client(sandbox, r).servicers(sandbox.open_kfid)


def test_a_page_that_is_not_json_fails_like_requests_does():
    import requests

    from bot.wecom.http import Response

    page = Response(403, b"<html>Forbidden</html>", {}, "http://proxy/cgi-bin/gettoken")
    with pytest.raises(requests.RequestException):  # what bot/wecom/client.py turns into a WeComError
        page.json()


def _self_signed(tmp_path):
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return tmp_path / "cert.pem", tmp_path / "key.pem"


def test_https_is_verified_against_the_ca_bundle(tmp_path):
    import http.server
    import ssl
    import threading

    import requests

    from bot.wecom.http import Session

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"errcode": 0, "access_token": "t"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    cert, key = _self_signed(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}/cgi-bin/gettoken"
    try:
        assert Session(ca_file=str(cert)).get(url, timeout=5).json()["access_token"] == "t"
        with pytest.raises(requests.ConnectionError):  # not signed by a CA of the bundle (certifi's by default)
            Session().get(url, timeout=5)
    finally:
        server.shutdown()


def test_threads_call_at_once_each_on_its_own_connection(sandbox, r):
    from concurrent.futures import ThreadPoolExecutor

    c = client(sandbox, r)
    c.servicers(sandbox.open_kfid)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: c.servicers(sandbox.open_kfid), range(80)))
    assert len(answers) == 80 and len(sandbox.requests("kf/servicer/list")) == 81


def test_one_handle_serves_posts_and_gets_in_turn(sandbox, r):
    c = client(sandbox, r)
    c.servicers(sandbox.open_kfid)
    c.send_app_message({"touser": "zhangsan", "msgtype": "text", "text": {"content": "新客户"}})
    c.servicers(sandbox.open_kfid)  # after a POST on the same handle: a GET again, without the POST's body
    c.send_app_message({"touser": "lisi", "msgtype": "text", "text": {"content": "新客户"}})
    seen = [(q["method"], q["path"].removeprefix("/cgi-bin/"), q.get("json")) for q in sandbox.requests()
            if not q["path"].endswith("gettoken")]
    assert [(m, p) for m, p, _ in seen] == [("GET", "kf/servicer/list"), ("POST", "message/send")] * 2
    assert seen[2][2] is None and seen[3][2]["touser"] == "lisi"


def test_proxy_variables_of_the_environment_are_not_followed(sandbox, r, monkeypatch):
    from bot.redis_server import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    for name in ("http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, dead)
    assert client(sandbox, r).servicers(sandbox.open_kfid) == {}  # straight to WeCom, as before libcurl


class _Hangup:
    """A WeCom stand-in over raw sockets: kept-alive JSON answers, except that a POST to `path` is read and then
    the connection is closed without an answer (the call may be done; WeCom's answer is lost)."""

    def __init__(self, path: str) -> None:
        import socket
        import threading

        self.path, self.posts = path, 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/cgi-bin/"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        import json

        data = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(data) < length:
                    data += conn.recv(65536)
                data = data[length:]
                if head.startswith(b"POST") and f"/cgi-bin/{self.path}".encode() in head.split(b"\r\n")[0]:
                    self.posts += 1
                    return  # read, maybe done, and no answer
                body = json.dumps({"errcode": 0, "access_token": "t", "expires_in": 7200, "servicer_list": []})
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body.encode())

    def close(self) -> None:
        self.sock.close()


def test_an_alert_whose_answer_never_comes_is_sent_once(r):
    server = _Hangup("message/send")
    try:
        c = WechatpyWeCom(SANDBOX_CORP_ID, "s", 1, server.url, r, timeout=5, sleep=lambda s: None)
        c.servicers("wk")  # a kept-alive connection now exists: libcurl would resend on a new one by itself
        with pytest.raises(WeComError) as err:
            c.send_app_message({"touser": "zhangsan", "msgtype": "text", "text": {"content": "新客户"}})
        assert "network: ChunkedEncodingError" in str(err.value)  # sent: maybe done, so not repeated
        assert server.posts == 1
    finally:
        server.close()


def test_a_repeatable_call_whose_answer_never_comes_is_repeated(r):
    server = _Hangup("kf/servicer/list")
    try:
        c = WechatpyWeCom(SANDBOX_CORP_ID, "s", 1, server.url, r, timeout=5, sleep=lambda s: None)
        with pytest.raises(WeComError):
            c.call("POST", "kf/servicer/list", {"open_kfid": "wk"})
        assert server.posts > 1  # our backoff repeats it (and libcurl, on a reused connection)
    finally:
        server.close()
