"""Prometheus metrics: `Metrics.render()` (the text format 0.0.4) for the HTTP API's `/metrics`, and a
standalone listener (`MetricsListener`) for `<metrics><enabled>yes`. Beside events, wdb and authd in the
layers: it reads the store and remoted below it, and the events and enrolment objects the manager hands
it (`sources.py`), never importing them. Every metric is listed in docs/metrics.md.
"""
