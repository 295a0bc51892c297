"""One module per ``vat3d`` sub-command; each defines ``register(app)``."""
