"""Benchmarks of the edge: realtime capacity and latency, file throughput, edge overhead (`python -m benchmarks`)."""
