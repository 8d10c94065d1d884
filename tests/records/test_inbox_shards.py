"""The sharded inbox on whatever Redis the suite runs on: a customer in one shard, in order; puts per shard in
one call each (a forgotten script loaded again); dead letters and replay per shard; depth over all shards."""

from __future__ import annotations

from bot.queue.inbox import Inbox, Item, split_id


def items(customers: int, each: int) -> list[Item]:
    return [Item("kf_msg", f"c{c}-{n}", f"kfmsg:c{c}-{n}", f"c{c}") for c in range(customers) for n in range(each)]


def test_four_shards_keep_each_customer_in_one_shard_and_in_order(r):
    inbox = Inbox(r, 4)
    assert inbox.put_many(items(12, 3), 60) == 36 and inbox.put_many(items(12, 3), 60) == 0
    got = []
    while batch := inbox.read("w", 10, None):
        got += batch
    assert len(got) == 36 and len({split_id(e.id)[0] for e in got}) > 1
    for c in range(12):
        mine = [e for e in got if e.data.startswith(f"c{c}-")]
        assert len({split_id(e.id)[0] for e in mine}) == 1
        assert [e.data for e in mine] == [f"c{c}-{n}" for n in range(3)]
    assert Inbox(r).shards == 4  # a reader without the setting reads every shard
    for e in got:
        inbox.ack(e.id)
    assert inbox.depth() == {"length": 0, "pending": 0, "lag": 0, "dead": 0, "shards": 4}


def test_put_each_reloads_a_forgotten_script_and_answers_per_item(r):
    inbox = Inbox(r, 4)
    batch = items(6, 1)
    assert inbox.put_each(batch[:3], 60) == [1, 1, 1]
    r.script_flush()  # as a restarted Redis
    assert inbox.put_each(batch, 60) == [0, 0, 0, 1, 1, 1]
    assert len(inbox.peek()) == 6


def test_dead_letters_of_every_shard_are_listed_and_replayed_into_their_shard(r):
    inbox = Inbox(r, 4)
    inbox.put_many(items(8, 1), 60)
    for e in inbox.read("w", 100, None):
        inbox.dead_letter(e, "boom")
    letters = inbox.dead_letters()
    assert len(letters) == 8 and {d["error"] for d in letters} == {"boom"}
    assert inbox.depth()["dead"] == 8 and inbox.depth()["pending"] == 0
    first = letters[0]
    assert inbox.replay([first["id"]]) == 1 and inbox.depth()["dead"] == 7
    [again] = inbox.read("w", 100, None)
    assert again.data == first["data"] and split_id(again.id)[0] == split_id(first["id"])[0]
    assert inbox.replay() == 7 and inbox.depth()["dead"] == 0
