"""Training stage: the DDPM network, noise schedule, EMA, checkpoint files and the loop."""
