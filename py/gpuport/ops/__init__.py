"""The ops: one spec per built-in op (opspecs.py: kernel, NumPy reference, host kernel, launch, FLOP model), the
WGSL kernels and how they are launched (kernels.py, launches.py, pipelines.py), what the host can check in WGSL
before the GPU sees it (wgsl.py), a user kernel's NumPy twin (kernel_reference.py) and `rt.ops` (api.py).

Layer: above tensor/ and host/; imports those, formats/ and the floor.
"""
