"""Tests of `ltx_core.training`, one file per module."""
