"""Evaluation stage: FID, KID and PRDC of sampled sets against the atlas through training, and the
checkpoint selection that weighs them with the training losses."""
