"""Sending queued messages: the dispatcher that drains the queue and the channel drivers it uses."""
