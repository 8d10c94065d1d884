"""A 3-master Redis Cluster of the machine's redis-server on loopback: detected from any node's URL, refused
with a database number, named by doctor and /readyz; inbox and SOP keys spread over the nodes, scans see all."""

from __future__ import annotations

import dataclasses
import io
from datetime import timedelta

import pytest

from bot.ops.doctor import run_doctor
from bot.queue.inbox import Inbox, Item, split_id
from bot.records.customers import Customers
from bot.redis_server import RedisConfigError, connect, topology
from bot.web.metrics import readiness
from sop.engine import DUE, SHARDS, pending_counts, sharded
from sop.plan import Rules
from tests.cluster import LocalCluster
from tests.records.test_sop_engine import SH, at, week
from tests.support import engine_for, make_settings


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    group = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    yield group
    group.stop()


@pytest.fixture()
def rc(cluster):
    client = connect(f"redis://127.0.0.1:{cluster.nodes[1].port}/0")  # any node will do
    client.flushdb()  # every primary
    yield client
    client.close()


def test_any_node_url_gives_a_cluster_client_and_a_database_number_is_refused(cluster, rc):
    shape = topology(rc)
    assert (shape["mode"], shape["nodes"], shape["answering"]) == ("cluster", 3, 3)
    for n in range(50):  # MOVED is followed: keys land on every node
        rc.set(f"k{n}", n)
    assert all(node.client().dbsize() > 0 for node in cluster.nodes)
    with pytest.raises(RedisConfigError) as err:
        connect(f"redis://127.0.0.1:{cluster.nodes[0].port}/3")
    assert str(err.value) == (f"Redis at redis://127.0.0.1:{cluster.nodes[0].port}/3 is a Redis Cluster, which has "
                              "only database 0: use /0 in the URL, not /3")


def test_doctor_and_readyz_name_the_mode_and_the_nodes(cluster, rc, sandbox):
    settings, _ = make_settings(sandbox.url, cluster.url)
    out = io.StringIO()
    run_doctor(dataclasses.replace(settings), out)
    assert "Redis mode: cluster, 3 of 3 cluster nodes answer" in out.getvalue()
    _, body = readiness(rc, settings)
    assert body["redis_topology"] == {"mode": "cluster", "nodes": 3, "answering": 3}
    assert body["inbox"]["shards"] == 16


def test_inbox_shards_spread_a_customer_stays_in_one_and_every_shard_is_read(cluster, rc):
    inbox = Inbox(rc)
    assert inbox.shards == 16 and Inbox(rc, 4).shards == 4  # 16 is recorded: readers still read all 16
    items = [Item("kf_msg", f"{c}-{n}", f"kfmsg:{c}-{n}", c) for c in (f"wmC{i}" for i in range(40)) for n in range(3)]
    assert inbox.put_many(items, 60) == 120 and inbox.put_many(items[:5], 60) == 0
    assert inbox.put_each(items[:3] + [Item("kf_msg", "new", "kfmsg:new", "wmNew")], 60) == [0, 0, 0, 1]
    streams = {s: rc.xlen(s) for s in inbox.streams() if rc.exists(s)}
    assert len(streams) > 8 and len({rc.cluster_keyslot(s) for s in streams}) == len(streams)
    got = []
    while batch := inbox.read("w1", 32, None):
        got += batch
    assert len(got) == 121
    for c in ("wmC0", "wmC7"):  # one customer: one shard, in order
        mine = [e for e in got if e.data.startswith(c + "-")]
        assert len({split_id(e.id)[0] for e in mine}) == 1
        assert [e.data for e in mine] == [f"{c}-{n}" for n in range(3)]
    for e in got:
        inbox.ack(e.id)
    assert inbox.depth()["pending"] == 0


def test_sop_due_set_spreads_and_scans_see_every_primary(cluster, rc):
    customers = Customers(rc)
    for i in range(30):
        customers.saw_message(f"wmScan{i}", 1.0, "wkKF")
    assert {c.id for c in customers.all()} >= {f"wmScan{i}" for i in range(30)}
    engine = engine_for(rc, [week()], Rules(daily_cap=99), SH)
    start = at(2, 9)
    assert engine.enroll_many((f"wmScan{i}", "customer_added", start, {}) for i in range(30)) == 30
    assert int(rc.get(SHARDS)) == 16 and pending_counts(rc)["due"] == 30
    assert sum(1 for s in range(16) if rc.zcard(sharded(DUE, s))) > 8
    assert engine.tick(start + timedelta(minutes=1), batch=500).claimed == 30
    assert len([e for e in Inbox(rc).peek() if e.kind == "touch"]) == 30
