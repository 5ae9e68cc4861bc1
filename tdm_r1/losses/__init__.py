"""TDM / TDM-R1 math as pure, shape-documented functions (no models, no I/O).

Notation for tensor shapes: N = samples in a micro-batch, G = group size (images per prompt),
C, h, w = latent channels and size. Flow convention: x_s = (1 - s) x0 + s * noise, v = noise - x0.
"""
