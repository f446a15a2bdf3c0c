"""rates.md and rates.png: the rate x placement grid of a comparison whose placements ran at several rates.

`compare.tune_rates` chooses each placement's rate on validation loss and
returns the grid; report.write renders it here.
"""
import numpy as np

from dropzoo import plots


def rate_text(rate):
    return "sites' own" if rate is None else f"{rate:g}"


def markdown(grid):
    """The rate x placement grid as Markdown: mean validation loss, test accuracy and NLL."""
    lines = ["Rate chosen per placement by the lowest mean validation loss over the seeds all its rates ran "
             "(marked *; the validation loss column is that mean, over the seeds the choice read); the test "
             "columns are reported, not used to choose. A variant without dropout is one network at every rate "
             "(marked =), and a placement run at one rate had nothing to choose from (marked -). The choice and the "
             "contrasts read the same runs: a chosen rate's test mean is the best of several by validation, which "
             "flatters it against a variant with nothing to choose (choose on some seeds, contrast on others for a "
             "confirmatory test).", "",
             "| variant | rate | seeds | validation loss | test acc % | test NLL |",
             "| --- | --- | --- | --- | --- | --- |"]
    for g in grid:
        mark = " =" if g.get("no_dropout") else " -" if g.get("only") else " *" if g["selected"] else ""
        read = g.get("chosen_on", g["seeds"])
        seeds = f"{g['seeds']}" + (f" ({read} in the choice)" if read != g["seeds"] else "")
        lines.append(f"| {g['variant']} | {rate_text(g['rate'])}{mark} | "
                     f"{seeds} | {g['validation_loss']:.4f} | {100 * g['test_accuracy']:.2f} | "
                     f"{g['test_loss']:.4f} |")
    return "\n".join(lines) + "\n"


def plot(path, grid, title=""):
    """Heat maps of mean test accuracy and test NLL over rate x placement (chosen rate boxed)."""
    plt = plots.pyplot()
    variants = list(dict.fromkeys(g["variant"] for g in grid))
    rates = sorted({g["rate"] for g in grid}, key=lambda r: (r is None, r or 0))
    cells = {(g["variant"], g["rate"]): g for g in grid}
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.3 * len(rates) * 2, 1.5 + 0.45 * len(variants)))
    for ax, metric, name, scale, cmap in ((axes[0], "test_accuracy", "test accuracy (%)", 100, "viridis"),
                                          (axes[1], "test_loss", "test NLL", 1, "viridis_r")):
        values = np.array([[scale * cells[v, r][metric] if (v, r) in cells else np.nan for r in rates]
                           for v in variants])
        image = ax.imshow(values, cmap=cmap, aspect="auto")
        fig.colorbar(image, ax=ax, shrink=0.8)
        for i, v in enumerate(variants):
            for j, r in enumerate(rates):
                if (v, r) in cells:
                    ax.text(j, i, f"{values[i, j]:.2f}" if scale == 100 else f"{values[i, j]:.3f}",
                            ha="center", va="center", fontsize=7, color="white")
                    if cells[v, r]["selected"]:
                        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red",
                                                   linewidth=2))
        ax.set_xticks(range(len(rates)), [rate_text(r) for r in rates])
        ax.set_yticks(range(len(variants)), variants if ax is axes[0] else [""] * len(variants))
        ax.set_xlabel("dropout rate")
        ax.set_title(f"{name}; red: rate chosen on validation loss", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    plots.save(fig, path)
