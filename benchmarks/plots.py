"""Plots for benchmarks/RESULTS.md, from the JSON the benchmarks write to benchmarks/out/.

    python -m benchmarks.plots

- ``benchmarks/convergence.png``: fraction of pinned clusters on the new version against
  sandbox time after the rotation: the lower bound, the resources themselves, and what
  keysteward's passes saw (1,000 and the large fleet).
- ``benchmarks/cost_vs_fleet.png``: convergence time, CPU and ARM calls per binding against
  fleet size.
- ``benchmarks/pacing.png`` (from ``bench_fast``): clusters converged against sandbox time under
  three ARM write buckets keysteward is not told about, each next to its lower bound.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
PROPAGATION = HERE / "out" / "propagation.json"
FAST = HERE / "out" / "fast.json"


def _steps(times: list[float], n: int) -> tuple[list[float], list[float]]:
    """A cumulative step curve (fraction done) from sorted completion times."""
    xs, ys = [0.0], [0.0]
    for i, t in enumerate(times, start=1):
        xs.append(t)
        ys.append(i / n)
    return xs, ys


def _convergence_panel(ax: Any, case: dict[str, Any], title: str) -> None:
    n = case["bindings"]
    curves = case.get("curves") or {}
    bx, by = _steps(curves.get("lower_bound", []), n)
    ax.step(bx, by, where="post", color="black", linestyle="--", linewidth=1.5, zorder=5,
            label=f"lower bound ({case['lower_bound_s']:.0f} s)")
    ax_, ay = _steps(curves.get("actual", []), n)
    ax.step(ax_, ay, where="post", color="tab:blue", linewidth=3, alpha=0.6,
            label=f"resources converged ({case['actual_convergence_s']:.0f} s)")
    observed = curves.get("observed", [])
    if observed:
        ox = [p[0] for p in observed]
        oy = [p[1] / n for p in observed]
        end = max(ox[-1], bx[-1], ax_[-1]) * 1.05
        ax.step([*ox, end], [*oy, oy[-1]], where="post", color="tab:orange",
                label=f"keysteward's passes saw ({case['observed_convergence_s']:.0f} s)")
    ax.set_title(title)
    ax.set_xlabel("sandbox seconds after the rotation")
    ax.set_ylabel("fraction of pinned clusters on the new version")
    ax.set_ylim(-0.02, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)


def _baseline_panel(ax: Any, report: dict[str, Any]) -> None:
    """keysteward against one-at-a-time updates (the Azure samples' way), on a log time axis."""
    case, base = report["fleet_1000"], report["baseline_1000"]
    n = case["bindings"]
    per = base["per_cluster_s"]
    bx, by = _steps([per * i for i in range(1, n + 1)], n)
    ax.step(bx, by, where="post", color="tab:red",
            label=f"one at a time, .result() each ({base['fleet_sandbox_s'] / 3600:.1f} h)")
    observed = case["curves"]["observed"]
    ox, oy = [p[0] for p in observed], [p[1] / n for p in observed]
    ax.step([*ox, bx[-1]], [*oy, oy[-1]], where="post", color="tab:orange",
            label=f"keysteward ({case['observed_convergence_s']:.0f} s)")
    lx, ly = _steps(case["curves"]["lower_bound"], n)
    ax.step([*lx, bx[-1]], [*ly, 1.0], where="post", color="black", linestyle="--", label="lower bound")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_title(f"{n:,} clusters: keysteward vs one at a time")
    ax.set_xlabel("sandbox seconds after the rotation (log)")
    ax.set_ylim(-0.02, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(loc="center right", fontsize=8)


def plot_propagation(report: dict[str, Any], outdir: Path = HERE) -> list[Path]:
    written: list[Path] = []
    lro = report["parameters"]["lro_s"]
    confirm = report["parameters"]["confirm_delay_s"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    for ax, key in zip(axes[:2], ("fleet_1000", "fleet_big"), strict=True):
        case = report[key]
        _convergence_panel(ax, case, f"{case['bindings']:,} clusters / {case['subscriptions']} subscriptions")
    _baseline_panel(axes[2], report)
    fig.suptitle(f"Propagation after a rotation (LRO {lro:.0f} s, ARM writes 200 + 10/s per subscription, "
                 f"confirm passes every {confirm:.0f} s after the operations' Retry-After)", fontsize=10)
    fig.tight_layout()
    path = outdir / "convergence.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    rows = report["cost_vs_size"]
    sizes = [r["bindings"] for r in rows]
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(14, 4))
    a1.plot(sizes, [r["actual_convergence_s"] for r in rows], "o-", color="tab:blue", linewidth=4, alpha=0.5,
            label="resources converged")
    a1.plot(sizes, [r["lower_bound_s"] for r in rows], "x--", color="black", zorder=5, label="lower bound")
    a1.plot(sizes, [r["observed_convergence_s"] for r in rows], "o-", color="tab:orange", label="keysteward saw")
    a1.set_title("convergence time (sandbox s)")
    a2.plot(sizes, [r["cpu_s"] for r in rows], "o-", label="process CPU (all)")
    a2.plot(sizes, [r["cpu_keysteward_s"] for r in rows], "o-", label="keysteward (minus sandbox)")
    a2.set_title("CPU seconds for the whole propagation")
    a3.plot(sizes, [r["arm_calls_per_binding"] for r in rows], "o-", label="ARM calls")
    a3.plot(sizes, [r["arm_writes_per_binding"] for r in rows], "o-", label="ARM writes")
    a3.set_title("ARM requests per pinned binding")
    a3.set_ylim(0, max(r["arm_calls_per_binding"] for r in rows) * 1.3)
    for ax in (a1, a2, a3):
        ax.set_xscale("log")
        ax.set_xlabel(f"pinned clusters ({rows[0]['subscriptions']} subscriptions)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = outdir / "cost_vs_fleet.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def plot_pacing(report: dict[str, Any], outdir: Path = HERE) -> list[Path]:
    cases = report.get("pacing") or []
    if not cases:
        return []
    fig, axes = plt.subplots(1, len(cases), figsize=(5 * len(cases), 4), sharey=True)
    for ax, case in zip(axes if len(cases) > 1 else [axes], cases, strict=True):
        n, bucket = case["bindings"], case["bucket"]
        net = case["refill_per_s"] - case["other_client_per_s"]
        lro = case["lower_bound_s"] - max(0.0, (n - bucket) / net)
        bound = sorted(max(0.0, (k - bucket) / net) + lro for k in range(1, n + 1))
        bx, by = _steps(bound, n)
        ax.plot(bx, by, "--", color="grey", label=f"lower bound ({case['lower_bound_s']:.0f} s)")
        ax.plot(*_steps(case["curve"], n), color="tab:blue", linewidth=2,
                label=f"keysteward, defaults ({case['converged_s']:.0f} s, {case['over_bound']}x)")
        ax.set_title(case["name"], fontsize=10)
        ax.set_xlabel("sandbox seconds after the rotation")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    (axes[0] if len(cases) > 1 else axes).set_ylabel(f"fraction of {cases[0]['bindings']:,} clusters converged")
    fig.suptitle("1,000 pinned clusters in one subscription, buckets keysteward is not told about", fontsize=11)
    fig.tight_layout()
    path = outdir / "pacing.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def main(argv: list[str] | None = None) -> list[Path]:
    del argv  # no options
    written: list[Path] = []
    if FAST.exists():
        written += plot_pacing(json.loads(FAST.read_text(encoding="utf-8")))
    if PROPAGATION.exists():
        written += plot_propagation(json.loads(PROPAGATION.read_text(encoding="utf-8")))
    else:
        print(f"no {PROPAGATION}: run python -m benchmarks.bench_propagation first", file=sys.stderr)
    return written


if __name__ == "__main__":
    for p in main():
        print(f"wrote {p}")
