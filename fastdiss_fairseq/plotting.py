"""The one way this project draws a report's figure: pyplot on the Agg backend, saved, closed.

Used by the step sweep (fastdiss_fairseq/step_sweep.py) and the two benchmarks
(recipes/ablation.py, recipes/speed_benchmark.py).
"""

import logging
from contextlib import contextmanager


@contextmanager
def saved_figure(path: str, **subplots_kwargs):
    """Yield (fig, axes) of ``plt.subplots(**subplots_kwargs)``; on a clean exit lay the figure
    out and save it to ``path`` (PNG, 120 dpi). The figure is closed either way."""
    # fairseq's import sets the root logger to DEBUG; matplotlib would then log every font it scans.
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")  # no display on a server, and no GUI event loop in a benchmark
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(**subplots_kwargs)
    try:
        yield fig, axes
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        # pyplot keeps every figure until it is closed, and the speed report is rewritten after
        # every row of its table.
        plt.close(fig)
