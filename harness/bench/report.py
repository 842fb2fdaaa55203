"""The figures of ``harness bench`` as text."""

from __future__ import annotations

from typing import Any


def format_report(figures: dict[str, Any]) -> str:
    """The figures of :func:`bench_members` (and ``figures["scaling"]``) as text."""
    f = figures
    mlp = f"{f['features']}-{'-'.join(map(str, f['hidden']))}-1"
    lines = [
        f"{f['members']} members ({len(f['schedules'])} schedules x {f['seeds']} seeds), MLP {mlp} "
        f"({f['depth']}x{f['width']}), {f['rows']} rows, batch {f['batch_size']}, {f['epochs']} epochs "
        f"({f['steps']} steps/member), threads {f['threads']}, medians of {f['repeats']}",
        f"plain loop (AdamW + LambdaLR + DataLoader per member)  {f['seconds_loop']:8.3f} s",
        f"batched trainer, batched matmuls                       {f['seconds_batched']:8.3f} s"
        f"   speedup {f['speedup']:5.1f}x",
        f"batched trainer, vmap(functional_call)                 {f['seconds_vmap']:8.3f} s"
        f"   speedup {f['vmap_speedup']:5.1f}x",
        f"achieved {f['gflops']:.2f} GFLOP/s; fp32 matmul peak {f['peak_gflops']:.1f} GFLOP/s "
        f"({f['threads']} threads); peak_fraction {f['peak_fraction']:.3f}",
        f"max_rel_diff {f['max_rel_diff']:.1e} (final weights, batched vs loop, relative to the largest; "
        f"float32 roundoff, amplified over the run by schedules that keep a high LR)",
    ]
    if "rel_diff_by_schedule" in f:
        lines.append("  by schedule: " + ", ".join(f"{name} {d:.0e}" for name, d in f["rel_diff_by_schedule"].items()))
    if "wide" in f:
        w = f["wide"]
        lines.append(
            f"wider, batched only: MLP {f['features']}-{'-'.join(map(str, w['hidden']))}-1, batch {w['batch_size']}, "
            f"{w['epochs']} epochs: {w['seconds']:.3f} s, {f['wide_gflops']:.2f} GFLOP/s, "
            f"wide_peak_fraction {f['wide_peak_fraction']:.3f}"
        )
    for axis, entries in f.get("scaling", {}).items():
        base = entries[0][axis]
        cells = ", ".join(f"x{e[axis] / base:g}: {e['ratio']:.2f}x time" for e in entries)
        lines.append(f"cost as {axis} grow ({base} -> {entries[-1][axis]}): {cells}")
    return "\n".join(lines)


def format_windows_report(figures: dict[str, Any]) -> str:
    """The figures of :func:`bench_windows` as text."""
    f = figures
    peak = f["peak_mb"]
    rows = [
        ("plain torch loop with a DataLoader, one member at a time", f["plain_s"], peak["plain"]),
        ("members of one window stacked, windows in turn", f["per_window_s"], peak["per_window"]),
        (f"all {f['windows'] * f['members']} members of all windows in one stack", f["stacked_s"], peak["stacked"]),
    ]
    lines = [
        f"{f['windows']} rolling windows of {f['rows']} rows (S&P 500 returns), {f['members']} members each "
        f"(3 schedules x {f['members'] // 3} seeds), MLP {f['features']}-{'-'.join(map(str, f['hidden']))}-1, "
        f"{f['epochs']} epochs, batch {f['batch_size']}, threads {f['threads']}, medians of {f['repeats']}",
        f"{'way':<58} {'seconds':>8} {'vs stack':>9} {'peak MB':>8}",
    ]
    for name, secs, mb in rows:
        memory = "       -" if mb is None else f"{mb:8.1f}"
        lines.append(f"{name:<58} {secs:8.3f} {secs / f['stacked_s']:8.1f}x {memory}")
    lines += [
        f"speedup_windows (plain / all-window stack) {f['speedup_windows']:.1f}x; "
        f"stack_gain (per-window / all-window) {f['stack_gain']:.2f}x",
        f"memory: all-window stack estimated {f['stack_estimate_mb']:.1f} MB (training_bytes); "
        f"process peak RSS {f['max_rss_mb']:.0f} MB",
        f"same out-of-sample predictions: max difference {f['max_prediction_diff']:.1e} relative to the largest "
        f"(plain loop vs stacks: float32 roundoff over {f['steps']} steps); per-window vs all-window stack "
        f"{f['stack_prediction_diff']:.1e}",
    ]
    return "\n".join(lines)
