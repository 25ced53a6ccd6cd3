"""Performance tools: the benchmark, the step roofline, the op profile, peak FLOPs and compile-only reports."""
