"""What one plain FAQ message costs in Redis round trips, webhook to reply (issue 13's target: at most 15)."""

from __future__ import annotations

import redis

from tests.support import drain, kf_notice

CUSTOMER = "wmTrips0001"


def test_a_plain_faq_message_of_a_returning_customer_costs_at_most_15_round_trips(sandbox, service, runtime,
                                                                                  monkeypatch):
    worker = runtime.worker()
    sandbox.add_customer_text(CUSTOMER, "你好")  # the first contact (welcome, journeys) is not the plain case
    assert service.post(kf_notice(sandbox.callback_token())).status_code == 200
    drain(worker)
    before = len(sandbox.delivered())
    sent: list[object] = []
    real = redis.connection.Connection.send_packed_command

    def counting(self, command, check_health=True):  # one send is one round trip (a pipeline is one)
        sent.append(command)
        return real(self, command, check_health)

    sandbox.add_customer_text(CUSTOMER, "几天发货")
    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
    assert service.post(kf_notice(sandbox.callback_token())).status_code == 200
    assert worker.run_once() == 1  # the notice: the pull queues the message
    assert worker.run_once() == 1  # the message: classified, answered, recorded
    monkeypatch.undo()
    replies = sandbox.delivered()[before:]
    assert len(replies) == 1 and replies[0]["touser"] == CUSTOMER and replies[0]["text"]["content"]
    assert len(sent) <= 15, f"{len(sent)} round trips"
