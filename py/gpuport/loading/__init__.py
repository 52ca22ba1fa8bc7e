"""Loading and keeping: model weights fetched progressively in verified chunks (loader.py, gguf_source.py), the
transports that fetch them natively, the chunk caches that keep them between loads (memory, disk; IndexedDB is in
backends/pageio.py), the record stores that keep pipeline manifests and selector history, the progress bar.

Layer: above backends/ (it takes the page's fetch and IndexedDB from there); imports backends/, host/, formats/, the floor.
"""
