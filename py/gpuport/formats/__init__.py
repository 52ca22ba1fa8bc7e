"""File formats gpuport reads itself (pure Python + NumPy, so they run in Pyodide): safetensors, GGUF."""
