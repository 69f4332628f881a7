"""Training: configuration, device selection, the epoch loop and evaluation."""
