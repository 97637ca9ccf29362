"""Benchmarks: the reference way of running MemSeg against our folded graph, and the floor."""
