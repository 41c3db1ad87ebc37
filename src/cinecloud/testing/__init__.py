"""Fakes that ship with the package: clock, stores, tiny pipelines."""
