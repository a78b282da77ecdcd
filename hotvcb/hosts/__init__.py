"""Hypervisor drivers behind one Protocol (base.py); jobs never see commands."""
