"""Helpers shared by the tests: real scorers, sockets, an MQTT broker (no tests here)."""
