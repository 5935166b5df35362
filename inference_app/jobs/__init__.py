"""Scheduled work: idle shutdown and reconciliation."""
