"""Grafana dashboards, Prometheus alert rules and provisioning, shipped as package data (`runtap dashboards export`)."""
