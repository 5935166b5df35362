"""The domain: registry, lifecycle, inference forwarding."""
