"""The engine: how a runtime executes what placement decided. Op execution and the device strategies, device memory,
recovery from device loss, the pipeline cache and precompilation, kernel tuning, the profiler, the compatibility
report, and `FallbackManager` (the public facade over placement).

Layer: above placement/; imports it and every layer below. A collaborator's runtime is a type-only back-reference.
"""
