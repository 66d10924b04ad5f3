"""Addons behind the relay: capture, request metrics and request tracing."""
