"""Tests of `ltx_core.training.evaluation`, one file per module."""
