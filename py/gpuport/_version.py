"""The package version, in a module of its own so everything can import it without importing gpuport."""

__version__ = "0.1.0"
