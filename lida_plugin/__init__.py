"""lida-plugin: is this image AI-generated, and by which registered generator? (LIDA, retrieval-based attribution)."""

__version__ = "0.1.0"
