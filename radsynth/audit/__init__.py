"""Audit stage (to come): anatomical screening and the memorization audit of sampled sets."""
