"""The per-bed detection core: pure, synchronous, clock passed in. It decides everything
clinical (buffers, pause, technical alarms, alarm state); the daemon only moves data to it.
"""
