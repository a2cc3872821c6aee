"""Examples for hosts that embed lida through its pluggy hooks (see docs/hooks.md)."""
