"""Decisions: what the classifier tells the controller about a device (decision) and the engine that makes them (engine)."""
