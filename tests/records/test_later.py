"""An entry's gathered Redis work (bot/records/later.py), on a real Redis: deferred writes and script calls go with
the next round trip in order, values read ahead are not read again, our own writes keep them true."""

from __future__ import annotations

import redis

from bot.records import later

BUMP = "redis.call('RPUSH', KEYS[1], ARGV[1]) return redis.call('LLEN', KEYS[1])"


def test_deferred_writes_and_script_calls_go_in_order_with_the_next_flush(r):
    bump = r.register_script(BUMP)
    with later.gathering(r):
        later.write(r, lambda p: p.rpush("{t}:log", "a"))
        later.call(r, bump, ["{t}:log"], ["b"])
        assert r.llen("{t}:log") == 0  # nothing sent yet
        assert later.flush(r, later.Call(bump, ["{t}:log"], ["c"])) == [3]  # the reply of `last`
        later.write(r, lambda p: p.rpush("{t}:log", "d"))
    assert r.lrange("{t}:log", 0, -1) == ["a", "b", "c", "d"]  # the end of the block sent the rest


def test_a_script_redis_forgot_is_loaded_again(r):
    bump = r.register_script(BUMP)
    bump(keys=["{t}:log"], args=["x"])
    r.script_flush()  # as after a restart of Redis
    with later.gathering(r):
        later.call(r, bump, ["{t}:log"], ["y"])
    assert r.lrange("{t}:log", 0, -1) == ["x", "y"]


def test_a_nested_gathering_is_part_of_the_outer_one(r):
    with later.gathering(r):
        with later.gathering(r):
            later.write(r, lambda p: p.set("{t}:k", "1"))
        assert r.get("{t}:k") is None
    assert r.get("{t}:k") == "1"


def test_values_read_ahead_are_read_once_and_follow_our_writes(r):
    r.set("{t}:a", "1")
    r.hset("{t}:h", mapping={"f": "v"})
    with later.gathering(r):
        later.ahead(r, ["{t}:a", "{t}:missing"], ["{t}:h"])
        r.set("{t}:a", "changed elsewhere")  # not ours: the entry keeps what it read at its start
        assert later.get(r, "{t}:a") == "1" and later.get(r, "{t}:missing") is None
        assert later.hgetall(r, "{t}:h") == {"f": "v"}
        later.know(r, "{t}:missing", "2")
        assert later.values(r, ["{t}:missing", "{t}:a"]) == ["2", "1"]
        later.forget(r, "{t}:a")
        assert later.get(r, "{t}:a") == "changed elsewhere"
    assert later.get(r, "{t}:a") == "changed elsewhere"  # outside a gathering: always Redis


def test_an_error_in_a_deferred_write_is_raised_after_the_others_ran(r):
    r.set("{t}:s", "text")
    try:
        with later.gathering(r):
            later.write(r, lambda p: p.incr("{t}:s"))  # not an integer
            later.write(r, lambda p: p.set("{t}:after", "1"))
        raise AssertionError("the error should be raised")
    except redis.ResponseError:
        pass
    assert r.get("{t}:after") == "1"


def test_a_forgotten_script_runs_even_when_a_later_write_fails(r):
    bump = r.register_script(BUMP)
    bump(keys=["{t}:log"], args=["x"])
    r.script_flush()
    r.set("{t}:s", "text")
    try:
        with later.gathering(r):
            later.write(r, lambda p: p.incr("{t}:s"))  # fails
            later.call(r, bump, ["{t}:log"], ["y"])  # refused (NOSCRIPT) after it, in the same round trip
        raise AssertionError("the error should be raised")
    except redis.ResponseError as exc:
        assert not isinstance(exc, redis.exceptions.NoScriptError)
    assert r.lrange("{t}:log", 0, -1) == ["x", "y"]
