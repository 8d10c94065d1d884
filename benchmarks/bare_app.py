"""Baseline for the webhook benchmark: a bare Flask app that only verifies, decrypts and returns 200."""

from __future__ import annotations

import os

import xmltodict
from flask import Flask, request
from wechatpy.enterprise import WeChatCrypto

crypto = WeChatCrypto(os.environ["WECOM_TOKEN"], os.environ["WECOM_AES_KEY"], os.environ["WECOM_CORP_ID"])
app = Flask("bare")


@app.post("/wecom/callback")
def callback():
    a = request.args
    msg = xmltodict.parse(request.get_data())["xml"]
    crypto.decrypt_message(msg, a["msg_signature"], a["timestamp"], a["nonce"])
    return ""
