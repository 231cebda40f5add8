"""Data stage: download the CSXA archives, preprocess them into the HDF5 atlas, split it."""
