"""nanobragg_torch: a vectorized, differentiable PyTorch twin of nanoBragg.c."""
