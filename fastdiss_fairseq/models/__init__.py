from . import fastdiss_transformer  # noqa: F401  (registers the model and architectures)
