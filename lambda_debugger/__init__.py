"""Placeholder; the import hook lands with the proxy."""
