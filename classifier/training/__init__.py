"""Training, labelling and evaluation. Needs the ``train`` extra (wfdb, matplotlib).

Nothing in the daemon's import path imports this package.
"""
