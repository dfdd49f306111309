"""Sending queued messages and reporting on them: dispatcher, channel drivers, receipt webhooks."""
