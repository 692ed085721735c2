"""The certified k-nearest-neighbour search over a real bank (XLA scan, Pallas kernels, autotune)."""
