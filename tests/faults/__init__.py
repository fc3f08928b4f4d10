"""Fault injection shared by the e2e fault tests and ``bench/faults.py``: a Redis and a PostgreSQL server of
their own (to kill and restart), worker slots that are started again when a worker exits, and a steady stream
of runs with the figures of what became of them."""
