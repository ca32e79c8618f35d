"""`dr replay`: see the module of the same job in the library."""

from __future__ import annotations

from dr.cli import app  # noqa: F401
