"""The charts ``make bench`` writes into docs/: build time against N (scenario 6) and against RTT (7).

matplotlib comes with the ``bench`` extra, which ``make bench`` installs and ``make test``
does not need; its figures are drawn without pyplot, so no display is ever looked for.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from matplotlib.axes import Axes  # type: ignore[import-not-found, unused-ignore]
from matplotlib.figure import Figure  # type: ignore[import-not-found, unused-ignore]

from bench.dag import DAG_VARIANTS, LOCKED_DAG_VARIANTS, MODES, DagResult
from bench.distance import DistanceResult
from bench.variants import Variant

DAG_CHART = "bench-dag.png"
DISTANCE_CHART = "bench-rtt.png"
# Each variant's color and marker, the same in every chart.
_STYLE = {
    Variant.UNLOCKED: ("tab:gray", "o"),
    Variant.GOKART_LOCK: ("tab:red", "s"),
    Variant.LOCKED_TARGET: ("tab:blue", "^"),
}
# Where a locked variant's ratio labels go, in points from their marker: (c) above, (b) below.
_LABEL_OFFSETS = {Variant.GOKART_LOCK: (0, -14), Variant.LOCKED_TARGET: (0, 7)}
_MODE_TITLES = {
    "cold": "cold: empty cache, every task computed",
    "warm": "warm: leaves cached, aggregate rebuilt",
}


def _label(variant: Variant) -> str:
    return f"{variant.letter} {variant.title}"


def _draw(
    panel: Axes, variant: Variant, x: Sequence[float], seconds: Sequence[float], unlocked: Sequence[float]
) -> None:
    """One variant's line; each point of a locked variant is labelled with its ratio to unlocked's."""
    color, marker = _STYLE[variant]
    panel.plot(x, seconds, color=color, marker=marker, label=_label(variant))
    if variant is Variant.UNLOCKED:
        return
    for at, value, anchor in zip(x, seconds, unlocked, strict=True):
        panel.annotate(
            f"{value / anchor:.1f}x",
            (at, value),
            textcoords="offset points",
            xytext=_LABEL_OFFSETS[variant],
            horizontalalignment="center",
            fontsize=8,
            color=color,
        )


def _two_panels(title: str) -> tuple[Figure, Sequence[Axes]]:
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    cold, warm = figure.subplots(1, 2)
    figure.suptitle(title)
    return figure, (cold, warm)


def _save(figure: Figure, panels: Sequence[Axes], x_label: str, path: str) -> None:
    for mode, panel in zip(MODES, panels, strict=True):
        panel.set_title(_MODE_TITLES[mode])
        panel.set_xlabel(x_label)
        panel.set_ylabel("build time (s, median over the rounds)")
        panel.margins(x=0.08)  # room for the labels of the outermost points, above and beside
        panel.set_ylim(0, panel.get_ylim()[1] * 1.08)
        panel.grid(alpha=0.3)
        panel.legend()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    figure.savefig(path, dpi=100)


def write_dag_chart(result: DagResult, directory: str) -> str:
    """Build time against N for the three variants, cold and warm; the chart's path."""
    figure, panels = _two_panels(
        "gokart.build of N leaves + 1 aggregate, Redis on loopback (labels: build time over (a)'s)"
    )
    for mode, panel in zip(MODES, panels, strict=True):
        unlocked = [result.builds[leaves, Variant.UNLOCKED].seconds(mode) for leaves in result.sizes]
        for variant in DAG_VARIANTS:
            seconds = [result.builds[leaves, variant].seconds(mode) for leaves in result.sizes]
            _draw(panel, variant, result.sizes, seconds, unlocked)
        panel.set_xticks(result.sizes)
    path = os.path.join(directory, DAG_CHART)
    _save(figure, panels, "N (leaves)", path)
    return path


def write_distance_chart(result: DistanceResult, directory: str) -> str:
    """Build time against the round trip to Redis, unlocked as a level line; the chart's path."""
    figure, panels = _two_panels(
        f"gokart.build of {result.leaves} leaves + 1 aggregate, Redis behind a delay proxy "
        "(labels: build time over (a)'s)"
    )
    round_trips = list(result.measured_round_trip_ms.values())
    for mode, panel in zip(MODES, panels, strict=True):
        panel.axhline(
            result.unlocked.seconds(mode),
            linestyle="--",
            color=_STYLE[Variant.UNLOCKED][0],
            label=f"{_label(Variant.UNLOCKED)} (no Redis)",
        )
        for variant in LOCKED_DAG_VARIANTS:
            seconds = [
                result.builds[added_ms, variant].seconds(mode) for added_ms in result.measured_round_trip_ms
            ]
            _draw(panel, variant, round_trips, seconds, [result.unlocked.seconds(mode)] * len(seconds))
    path = os.path.join(directory, DISTANCE_CHART)
    _save(figure, panels, "round trip to Redis (ms, measured PING)", path)
    return path
