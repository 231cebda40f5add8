"""Evaluation stage: features of real and synthetic radiographs, and FID, KID and PRDC against the
atlas."""
