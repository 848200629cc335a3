"""Training and command-line entry points of crema."""
