"""Benchmarks of itsm-sync (not tests): API calls per change, propagation overhead, webhook
ack latency, memory per link. ``python -m bench.run_all [--small]``; see docs/performance.md."""
