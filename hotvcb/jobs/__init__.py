"""Orchestration, one module per job; jobs use drivers and the store."""
