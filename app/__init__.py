"""The top layer: the ``ecg-monitor`` command, the demo and the benchmarks. It ties the daemon,
the classifier and the simulators together; nothing below imports it.
"""
