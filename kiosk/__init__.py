"""Kiosk visitor counter: door-sensor pulses to durable local counts and hourly uploads."""

__version__ = "0.1.0"
