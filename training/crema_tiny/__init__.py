"""crema-tiny: a ~1M-parameter BLIP-2-shaped backbone trained on CREMA-Synth, small enough to build, pre-train and
turn into a working CREMA on two CPU cores in minutes (`python -m crema_training.crema_tiny.recipe`)."""
