"""Tests for cloud_targets."""
