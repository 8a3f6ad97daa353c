"""bytewax dataflows wiring connectors and twin (issue 4)."""
