"""Readers and writers of network files, one format per module."""
