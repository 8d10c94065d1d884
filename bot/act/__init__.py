"""Performs what handlers decided; with queue/kfsync.py the only callers of WeCom."""
