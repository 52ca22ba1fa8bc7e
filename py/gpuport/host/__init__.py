"""The host: the cpu tier's compute. The NumPy references of every op (the oracle all kernels answer to), ggml
quantisation, and gpuport's C kernels (hostkernels/) natively through ctypes or in the page as WebAssembly, on one
thread or a pool; `hostops.KERNELS` is the one place that picks which of them runs an op here.

Layer: above formats/; imports only formats/ and the floor.
"""
