"""The site: what serves gpuport to a page. The dev server, `gpuport export`, the self-hosted Pyodide distribution,
the page's archives, bytecode and memory snapshot, the demo page's Python (kernel table, chat, microphone) and the
`gpuport` command line.

Layer: an application over the library; imports any layer below it (models, runtime, ...), never testing/.
"""
