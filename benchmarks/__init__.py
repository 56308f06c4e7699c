"""Fleet-scale and latency measurements; run as scripts (``python -m benchmarks.<name>``)."""
