"""Wiring: store + core + net + timers = the daemon."""
