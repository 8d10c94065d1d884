"""What is queued and who drains it: callbacks, the inbox, workers, the kf pull, the scheduler."""
