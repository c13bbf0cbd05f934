from . import fastdiss_translation  # noqa: F401  (registers the task)
