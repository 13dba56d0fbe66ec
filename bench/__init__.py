"""Benchmarks of the gateway (`make bench`): never part of the test run's pass/fail."""
