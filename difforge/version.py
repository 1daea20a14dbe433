"""The package version, in a base-layer module so every layer (cli, serve, ...) can read it
without importing the package root."""

__version__ = "0.1.0"
