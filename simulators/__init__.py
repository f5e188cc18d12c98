"""Simulators (synthetic patients, replay of real records), the alarm subscriber and the scorer.

They speak the daemon's wire format (``protocol.wire``) over the same transports.
"""
