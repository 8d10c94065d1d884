"""The sandbox's 「联系我」 contact ways, kf links and corp tags, with WeCom's field rules and errors."""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

Json = dict[str, Any]

SCENE_RE = re.compile(r"^[0-9a-zA-Z_-]{1,32}$")  # kf/add_contact_way scene
STATE_MAX = 30  # contact way state: at most 30 characters
REMARK_MAX = 30
MAX_USERS = 100
# Contact-way errors as the platform notes list them (§3.6): 41040-41045.
BAD_SCENE, TOO_MANY_USERS, BAD_STYLE, NO_CONFIG_ID, BAD_CONFIG_ID, QUOTA = range(41040, 41046)


def _err(code: int, msg: str) -> Json:
    return {"errcode": code, "errmsg": msg}


def _ok(**extra: Any) -> Json:
    return {"errcode": 0, "errmsg": "ok", **extra}


class ContactWays:
    """Contact ways (config_id -> way), kf links (open_kfid, scene -> url) and corp tag groups."""

    def __init__(self, quota: int = 500_000) -> None:
        self.quota = quota  # contact ways the API may create (WeCom: about 500k, shared with 加入群聊)
        self.reset()

    def reset(self) -> None:
        """Forget every way, link and tag."""
        self.ways: dict[str, Json] = {}
        self.kf_links: dict[str, str] = {}  # "open_kfid|scene" -> url
        self.tag_groups: dict[str, Json] = {}  # group name -> {group_id, group_name, tag: [{id, name}]}

    def state(self) -> Json:
        """What survives a sandbox restart."""
        return {"ways": self.ways, "kf_links": self.kf_links, "tag_groups": self.tag_groups}

    def restore(self, data: Json) -> None:
        """The opposite of state()."""
        self.ways = dict(data.get("ways") or {})
        self.kf_links = dict(data.get("kf_links") or {})
        self.tag_groups = dict(data.get("tag_groups") or {})

    # ---- externalcontact/*_contact_way -------------------------------------------------------

    def _fields(self, d: Json, way: Json) -> Json | None:
        """Check and apply the fields add and update share; an error body when one is wrong."""
        if "style" in d and d["style"] not in (1, 2, 3):
            return _err(BAD_STYLE, "invalid style")
        if "state" in d:
            if not isinstance(d["state"], str) or len(d["state"]) > STATE_MAX:
                return _err(40058, f"invalid state: at most {STATE_MAX} characters")
            way["state"] = d["state"]
        if "remark" in d:
            if not isinstance(d["remark"], str) or len(d["remark"]) > REMARK_MAX:
                return _err(40058, f"invalid remark: at most {REMARK_MAX} characters")
            way["remark"] = d["remark"]
        if "skip_verify" in d:
            way["skip_verify"] = bool(d["skip_verify"])
        if "user" in d:
            users = d["user"]
            if not isinstance(users, list) or not all(isinstance(u, str) and u for u in users):
                return _err(40058, "invalid user list")
            if (way["type"] == 1 and len(users) > 1) or len(users) > MAX_USERS:
                return _err(TOO_MANY_USERS, "too many users for this contact way type")
            way["user"] = list(users)
        if not way.get("user") and not way.get("party"):
            return _err(40058, "user or party required")
        return None

    def add(self, d: Json) -> Json:
        """externalcontact/add_contact_way."""
        if d.get("type") not in (1, 2):
            return _err(40058, "invalid type: 1 (one member) or 2 (several)")
        if d.get("scene") not in (1, 2):
            return _err(BAD_SCENE, "invalid scene: 1 (mini-program) or 2 (QR code)")
        if len(self.ways) >= self.quota:
            return _err(QUOTA, "contact way quota reached")
        way: Json = {"type": d["type"], "scene": d["scene"], "skip_verify": True, "state": "", "remark": "",
                     "user": [], "party": list(d.get("party") or [])}
        problem = self._fields(d, way)
        if problem:
            return problem
        config_id = secrets.token_hex(16)
        way.update(config_id=config_id, qr_code=f"https://wwcdn.weixin.qq.com/sandbox/qr/{config_id}.png")
        self.ways[config_id] = way
        return _ok(config_id=config_id, qr_code=way["qr_code"])

    def _known(self, d: Json) -> tuple[Json | None, Json | None]:
        config_id = d.get("config_id")
        if not config_id:
            return None, _err(NO_CONFIG_ID, "config_id missing")
        if config_id not in self.ways:
            return None, _err(BAD_CONFIG_ID, "invalid config_id")
        return self.ways[config_id], None

    def update(self, d: Json) -> Json:
        """externalcontact/update_contact_way: the fields given change, the QR code stays."""
        way, problem = self._known(d)
        if way is None:
            return problem or {}
        changed = dict(way)
        problem = self._fields(d, changed)
        if problem:
            return problem
        way.update(changed)
        return _ok()

    def get(self, d: Json) -> Json:
        """externalcontact/get_contact_way."""
        way, problem = self._known(d)
        return _ok(contact_way=dict(way)) if way is not None else (problem or {})

    def delete(self, d: Json) -> Json:
        """externalcontact/del_contact_way."""
        way, problem = self._known(d)
        if way is None:
            return problem or {}
        del self.ways[way["config_id"]]
        return _ok()

    def kf_add(self, d: Json, known_kfid: bool) -> Json:
        """kf/add_contact_way: one link per account and scene (asking again gives the same link)."""
        if not known_kfid:
            return _err(95000, "invalid open_kfid")
        scene = d.get("scene")
        if scene is not None and not (isinstance(scene, str) and SCENE_RE.match(scene)):
            return _err(40058, "invalid scene: <=32 bytes of [0-9a-zA-Z_-]")
        key = f"{d['open_kfid']}|{scene or ''}"
        if key not in self.kf_links:
            code = hashlib.sha256(str(d["open_kfid"]).encode()).hexdigest()[:20]
            self.kf_links[key] = f"https://work.weixin.qq.com/kfid/kfc{code}" + (f"?enc_scene={scene}" if scene else "")
        return _ok(url=self.kf_links[key])

    # ---- corp tags ---------------------------------------------------------------------------

    def tag_list(self, d: Json) -> Json:
        """externalcontact/get_corp_tag_list."""
        return _ok(tag_group=[dict(g) for g in self.tag_groups.values()])

    def tag_add(self, d: Json) -> Json:
        """externalcontact/add_corp_tag: into group_name (created when missing); a name it has is refused."""
        name, tags = d.get("group_name"), d.get("tag")
        if not isinstance(name, str) or not name or not isinstance(tags, list) or not tags:
            return _err(40058, "group_name and tag required")
        group = self.tag_groups.setdefault(name, {"group_id": "et" + secrets.token_hex(8), "group_name": name,
                                                 "tag": []})
        have = {t["name"] for t in group["tag"]}
        added = []
        for tag in tags:
            tag_name = tag.get("name") if isinstance(tag, dict) else None
            if not isinstance(tag_name, str) or not tag_name or len(tag_name) > 30:
                return _err(40058, "invalid tag name")
            if tag_name in have:
                return _err(40071, "tag name already exists")
            added.append({"id": "et" + secrets.token_hex(10), "name": tag_name})
        group["tag"] = [*group["tag"], *added]
        return _ok(tag_group={"group_id": group["group_id"], "group_name": name, "tag": added})

    # ---- a customer scans a code (for `wecom-bot chat --channel`) ------------------------------

    def by_state(self, state: str) -> Json:
        """Where a code with this state / scene leads: {"kind": "staff", "user": [...]} or {"kind": "kf",
        "open_kfid": ...}; {"kind": ""} when no code carries it."""
        for way in self.ways.values():
            if way.get("state") == state:
                return {"kind": "staff", "config_id": way["config_id"], "user": list(way["user"])}
        for key in self.kf_links:
            kfid, _, scene = key.partition("|")
            if scene == state:
                return {"kind": "kf", "open_kfid": kfid}
        return {"kind": ""}
