"""The Docker wrapper: containers, labels, ports, readiness."""
