"""Evaluation stage (to come): FID and fidelity metrics of sampled sets against the atlas."""
