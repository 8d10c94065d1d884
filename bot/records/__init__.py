"""What lives in Redis: one owner per key prefix."""
