"""State estimation: fit the twin to each tick's measurements."""
