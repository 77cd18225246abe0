"""CoreMachine benchmarks: `bench/fanout.py` measures fan-out, job throughput, stage creation and the commit ceiling."""
