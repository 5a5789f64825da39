"""Timed checks (CONTRACT section 7, issue 7): follow-up after discharge and other deadlines.

Due rows in the database are the truth; sweeps claim them with row locks so several hub
processes act exactly once, and whatever fell due while the hub was down is done on start.
"""
