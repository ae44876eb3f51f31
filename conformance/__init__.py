"""Conformance fixtures and the scripts that make them (see README.md); a package for tests."""
