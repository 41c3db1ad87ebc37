"""Thin commands that parse, build the config and call in."""
