"""stride_jax: JAX/Flax STRIDE — test-time training of a motion prior for occluded 3D pose."""

__version__ = "0.1.0"
