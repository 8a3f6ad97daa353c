"""pipetwin: a digital twin of a gas (or water) network, solved continuously against field data."""

__version__ = "0.1.0"
