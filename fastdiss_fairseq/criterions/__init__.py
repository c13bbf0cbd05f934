from . import fastdiss_loss  # noqa: F401  (registers the criterion)
