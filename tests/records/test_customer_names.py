"""The nickname index behind the console's search spreads over shards and is searched over all of them."""

from __future__ import annotations

from bot.records.customers import NAME_SHARDS, NAMES, Customers


def test_names_spread_over_shards_and_are_all_found(r):
    r.set(NAME_SHARDS, 4)  # as a cluster (16) would have it, smaller
    customers = Customers(r)
    for i in range(40):
        customers.set_name(f"wmName{i:02d}", f"{'小明' if i % 2 else '阿花'}{i}")
    keys = [NAMES, *(f"wecom:cust:{{names:{i}}}" for i in range(1, 4))]
    sizes = [r.hlen(k) for k in keys]
    assert sum(sizes) == 40 and all(sizes), sizes  # every shard holds some
    assert sorted(customers.find_by_name("小明", limit=100)) == [f"wmName{i:02d}" for i in range(1, 40, 2)]
    assert len(customers.find_by_name("阿花", limit=5)) == 5
    assert customers.name("wmName03") == "小明3"
