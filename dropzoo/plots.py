"""The one way the reports draw: matplotlib without a display, each figure written atomically as a PNG."""
from dropzoo import files


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only; no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, path, dpi=110):
    """Writes `fig` to `path` as a PNG (atomically) and closes it."""
    files.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    pyplot().close(fig)
