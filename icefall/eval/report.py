"""Per-layer summary of unit/representation metrics: a markdown table and a PNG plot."""
from pathlib import Path
from typing import Mapping, Tuple, Union

METRICS = ("abx_within", "abx_across", "pnmi", "mapr")
#: shown only when some row has them: PNMI of codebook units (SpidR/DinoSR target layers)
OPTIONAL_METRICS = ("pnmi_codebook",)
# ABX and MAP@R are shown in %, PNMI as a fraction (the SpidR / ZeroSpeech conventions).
SCALE = {"abx_within": 100.0, "abx_across": 100.0, "pnmi": 1.0, "mapr": 100.0, "pnmi_codebook": 1.0}
HEADER = {"abx_within": "ABX within (%)", "abx_across": "ABX across (%)", "pnmi": "PNMI", "mapr": "MAP@R (%)",
          "pnmi_codebook": "PNMI codebook"}


def layer_table(results: Mapping[Union[int, str], Mapping[str, float]]) -> str:
    """Markdown table, one row per layer (sorted), missing metrics shown as '-'.

    Args:
      results: {layer: {"abx_within": .., "abx_across": .., "pnmi": .., "mapr": ..}}, values as
        fractions in [0, 1] (the outputs of abx_score, unit_quality, map_at_r); an
        ``OPTIONAL_METRICS`` column appears when some row has it.
    """
    metrics = _metrics(results)
    lines = ["| layer | " + " | ".join(HEADER[m] for m in metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for layer in sorted(results, key=_layer_key):
        cells = []
        for m in metrics:
            v = results[layer].get(m)
            cells.append("-" if v is None else f"{v * SCALE[m]:.2f}" if SCALE[m] != 1 else f"{v:.3f}")
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_layer_report(
    results: Mapping[Union[int, str], Mapping[str, float]],
    out_prefix: Union[str, Path],
    title: str = "",
) -> Tuple[Path, Path]:
    """Write ``<out_prefix>.md`` (table) and ``<out_prefix>.png`` (ABX on the left axis, PNMI and
    MAP@R on the right, against layer; named rows such as ``"fbank"`` as dotted horizontal
    reference lines). Returns both paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_prefix = Path(out_prefix)
    md, png = out_prefix.with_suffix(".md"), out_prefix.with_suffix(".png")
    md.write_text((f"# {title}\n\n" if title else "") + layer_table(results))

    layers = sorted(results, key=_layer_key)
    # Numeric layers form the curves; named rows (e.g. "fbank", the input features) are drawn as
    # dotted horizontal reference lines, unless there are no numeric layers at all.
    refs = [l for l in layers if _layer_key(l)[0] == 1]
    if len(refs) < len(layers):
        layers = [l for l in layers if _layer_key(l)[0] == 0]
    else:
        refs = []
    xs = list(range(len(layers)))
    fig, ax = plt.subplots(figsize=(7, 4))
    right = ax.twinx()
    # ABX in % on the left axis; PNMI and MAP@R as fractions on the right one.
    for i, (m, axis, style, label) in enumerate((
        ("abx_within", ax, "o-", "ABX within (%)"),
        ("abx_across", ax, "s-", "ABX across (%)"),
        ("pnmi", right, "^--", "PNMI"),
        ("mapr", right, "d--", "MAP@R"),
        ("pnmi_codebook", right, "v:", "PNMI codebook"),
    )):
        scale = SCALE[m] if axis is ax else 1.0
        pts = [(x, results[l][m]) for x, l in zip(xs, layers) if results[l].get(m) is not None]
        if pts:
            axis.plot([p[0] for p in pts], [p[1] * scale for p in pts], style, color=f"C{i}", label=label)
        for ref in refs:
            if results[ref].get(m) is not None:
                axis.axhline(results[ref][m] * scale, color=f"C{i}", linestyle=":", linewidth=1)
    if refs:
        ax.plot([], [], "k:", linewidth=1, label=f"{', '.join(map(str, refs))} (dotted)")
    ax.set_xticks(xs, [str(l) for l in layers])
    ax.set_xlabel("layer")
    ax.set_ylabel("ABX error (%)")
    right.set_ylabel("PNMI, MAP@R")
    (h1, l1), (h2, l2) = ax.get_legend_handles_labels(), right.get_legend_handles_labels()
    if h1 or h2:
        ax.legend(h1 + h2, l1 + l2, loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return md, png


def _metrics(results: Mapping) -> Tuple[str, ...]:
    extra = tuple(m for m in OPTIONAL_METRICS if any(r.get(m) is not None for r in results.values()))
    return METRICS + extra


def _layer_key(layer) -> Tuple[int, Union[int, str]]:
    """Numeric layers first, in numeric order, then named ones."""
    try:
        return (0, int(layer))
    except (TypeError, ValueError):
        return (1, str(layer))
