"""The flow's steps, one small module each: validate (gate), align (ticks), twin (state estimation)."""
