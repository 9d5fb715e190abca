"""asyncpipe: find qualitative differences between two datasets with language models."""

__version__ = "0.1.0"
