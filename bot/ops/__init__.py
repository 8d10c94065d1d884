"""Operator tools: the wecom-bot command, doctor, chat; not needed to learn the message path."""
