"""The bottom layer: what crosses a process boundary. The sample-frame wire format, the alarm
message, transport URLs and topic names. Imports nothing else of the project.
"""
