"""Replay and what-if studies: a recorded history replayed through the same flow under changed networks."""
