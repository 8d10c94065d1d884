"""Pure WeCom payload builders for SOP touches and plain texts: kf send_msg, add_msg_template, message/send."""

from __future__ import annotations

from typing import Any

from bot.wecom import KF_TEXT_MAX_BYTES, clip
from bot.wecom.cards import LIMITS

__all__ = ["kf_text", "staff_text", "kf_payloads", "mass_task_body"]

MASS_TEXT_MAX_BYTES = 4000  # add_msg_template text.content
MINIPROGRAM_TITLE_MAX_BYTES = 64  # add_msg_template miniprogram.title


def kf_text(content: str) -> dict[str, Any]:
    """A kf send_msg text, cut to its byte limit."""
    return {"msgtype": "text", "text": {"content": clip(content, KF_TEXT_MAX_BYTES, "")}}


def staff_text(touser: str, content: str) -> dict[str, Any]:
    """A message/send text to a staff member (the client adds the agentid)."""
    return {"touser": touser, "msgtype": "text", "text": {"content": content}}


def kf_payloads(content: dict[str, Any]) -> list[dict[str, Any]]:
    """kf send_msg payloads for a step's text/link/image/miniprogram, in the order the customer sees them."""
    out: list[dict[str, Any]] = []
    if content.get("text"):
        out.append({"msgtype": "text", "text": {"content": clip(str(content["text"]), LIMITS["text"], "")}})
    if link := content.get("link"):
        # kf link: title <=128 B, desc <=512 B, url <=2048 B, thumb_media_id
        body = {"title": clip(link["title"], LIMITS["link.title"]), "url": link["url"]}
        if link.get("desc"):
            body["desc"] = clip(link["desc"], LIMITS["link.desc"])
        if link.get("thumb_media_id"):
            body["thumb_media_id"] = link["thumb_media_id"]
        out.append({"msgtype": "link", "link": body})
    if img := content.get("image"):
        out.append({"msgtype": "image", "image": {"media_id": img["media_id"]}})
    if mp := content.get("miniprogram"):
        body = {k: mp[k] for k in ("appid", "title", "pagepath", "thumb_media_id") if mp.get(k)}
        out.append({"msgtype": "miniprogram", "miniprogram": body})
    return out


def _attachments(content: dict[str, Any]) -> list[dict[str, Any]]:
    """add_msg_template attachments (their field names differ from kf send_msg)."""
    out: list[dict[str, Any]] = []
    if img := content.get("image"):
        out.append({"msgtype": "image", "image": {"media_id": img["media_id"]}})
    if link := content.get("link"):
        # link: title <=128 B, picurl, desc <=512 B, url <=2048 B
        body = {"title": clip(link["title"], LIMITS["link.title"]), "url": link["url"]}
        if link.get("desc"):
            body["desc"] = clip(link["desc"], LIMITS["link.desc"])
        out.append({"msgtype": "link", "link": body})
    if mp := content.get("miniprogram"):
        # miniprogram: title <=64 B, pic_media_id (cover, required), appid, page
        body = {"title": clip(mp["title"], MINIPROGRAM_TITLE_MAX_BYTES), "appid": mp["appid"],
                "page": mp["pagepath"]}
        if mp.get("thumb_media_id"):
            body["pic_media_id"] = mp["thumb_media_id"]
        out.append({"msgtype": "miniprogram", "miniprogram": body})
    return out


def mass_task_body(customer: str, sender: str, content: dict[str, Any], extra_text: str = "") -> dict[str, Any]:
    """externalcontact/add_msg_template body for one customer, sent by `sender` after they confirm it."""
    text = "\n".join(t for t in (str(content.get("text") or ""), extra_text) if t)
    body: dict[str, Any] = {"chat_type": "single", "external_userid": [customer], "sender": sender}
    if text:
        body["text"] = {"content": clip(text, MASS_TEXT_MAX_BYTES)}
    if attachments := _attachments(content):
        body["attachments"] = attachments
    return body
