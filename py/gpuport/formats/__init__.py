"""File formats gpuport reads itself, in pure Python + NumPy so they run in Pyodide: safetensors, GGUF, CTranslate2's
model.bin, the chunk manifest `gpuport pack-model` writes, and gpuport's own JSON records read back defensively.

Layer: above the floor (errors, types, platform); imports nothing else of gpuport.
"""
