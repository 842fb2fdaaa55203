"""``harness schedules`` and ``harness bench``: the schedule catalogue and the speed measurements."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from harness.errors import HarnessError


def add_parsers(commands: Any) -> None:
    schedules = commands.add_parser("schedules", help="list the schedule catalogue, or plot LR curves")
    schedules.add_argument("names", nargs="*", help="schedules to plot (names; default: the whole catalogue)")
    schedules.add_argument("--plot", metavar="PNG", help="write the LR curves of NAMES to this PNG")
    schedules.add_argument("--steps", type=int, default=1000, help="total optimizer steps T (default 1000)")
    schedules.add_argument("--log", action="store_true", help="log-scale LR axis")
    schedules.set_defaults(handler=_cmd_schedules)

    bench = commands.add_parser(
        "bench", help="measure the batched trainer against a plain torch loop",
        description="Without --windows: one window's members, trained by a plain torch loop (one AdamW + "
        "LambdaLR + DataLoader per member, the way users write it) and by the batched trainer, in one process; "
        "prints the speedup, the achieved GFLOP/s, this machine's fp32 matmul peak, their ratio "
        "(peak_fraction) and max_rel_diff between the two results, then the batched trainer alone on a wider "
        "MLP (3x256, batch 512, 10 epochs; wide_peak_fraction). Members: M = S schedules x M/S seeds, S the "
        "largest divisor of M up to 10, schedules the first S of constant, step, multistep, exponential, "
        "inverse_sqrt, linear, polynomial, cosine, cosine_restarts, onecycle (30 -> 10 x 3, 15 -> 5 x 3). "
        "Defaults: the reference workload, 30 members, MLP 2x64, 20 features, 1000 rows, batch 64, 50 epochs. "
        "With --windows N: the walk-forward workload (N rolling windows of S&P 500 returns, 3 schedules x "
        "--seeds members each) trained three ways: a plain torch loop per member, each window's members "
        "stacked (windows in turn), and all windows' members in one stack. "
        "With --e2e: the whole `harness run` process, start to exit, against the plain torch script a user would "
        "write for the same walk-forward work (shipped with the bench, run as its own process): --windows N "
        "(default 10) rolling windows of --rows (default 484) S&P 500 rows, 3 schedules x --seeds, 20 epochs, "
        "batch 64, --threads (default 1) torch threads, best of --repeats (default 2); prints e2e_speedup.",
    )
    bench.add_argument("--windows", type=int, help="measure the walk-forward workload over N windows")
    bench.add_argument("--e2e", action="store_true",
                       help="time the whole `harness run` process against the plain torch script (see above)")
    bench.add_argument("--members", type=int, default=30,
                       help="members (schedules x seeds, see above), default 30 = 10 schedules x 3 seeds")
    bench.add_argument("--width", type=int, default=64, help="hidden width of the MLP, default 64")
    bench.add_argument("--depth", type=int, default=2, help="hidden layers of the MLP, default 2")
    bench.add_argument("--seeds", type=int, default=2, help="--windows: seeds per schedule, default 2")
    bench.add_argument("--rows", type=int, help="training rows per window, default 1000 (--windows: 504)")
    bench.add_argument("--features", type=int, default=20, help="input features, default 20")
    bench.add_argument("--epochs", type=int, help="epochs, default 50 (--windows: 20)")
    bench.add_argument("--batch-size", type=int, help="batch size, default 64")
    bench.add_argument("--repeats", type=int, help="timed repeats (medians), default 3 (--e2e: best of 2)")
    bench.add_argument("--threads", type=int,
                       help="torch threads for every side (and the peak), default torch's default (all cores)")
    bench.add_argument("--no-wide", action="store_true", help="skip the wider workload (3x256, batch 512)")
    bench.add_argument("--scale", action="store_true",
                       help="also measure cost as members and rows grow, and whole backtests as windows, members "
                       "and rows double, local against process (harness.bench.scale)")
    bench.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    bench.set_defaults(handler=_cmd_bench)


def _cmd_schedules(args: argparse.Namespace) -> int:
    from harness import schedules

    if args.steps <= 0:
        raise HarnessError(f"--steps: must be > 0, got {args.steps}")
    if not args.plot:
        if args.names:
            for name in args.names:
                schedules.get_schedule(name)
        print(schedules.format_catalogue())
        return 0
    from harness.figures import plot_schedules

    names = args.names or [name for name in schedules.SCHEDULES]
    path = plot_schedules(list(names), args.steps, args.plot, log_scale=args.log)
    print(f"wrote {path}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.e2e:
        return _cmd_bench_e2e(args)
    import torch

    from harness import bench

    args.repeats = args.repeats if args.repeats is not None else 3
    windowed = args.windows is not None
    args.rows = args.rows if args.rows is not None else (504 if windowed else bench.REFERENCE["rows"])
    args.epochs = args.epochs if args.epochs is not None else (20 if windowed else bench.REFERENCE["epochs"])
    args.batch_size = args.batch_size if args.batch_size is not None else 64
    args.threads = args.threads if args.threads is not None else torch.get_num_threads()
    names = ("windows", "seeds") if windowed else ("members",)
    for name in (*names, "width", "depth", "rows", "features", "epochs", "batch_size", "repeats", "threads"):
        if getattr(args, name) <= 0:
            raise HarnessError(f"--{name.replace('_', '-')}: must be > 0, got {getattr(args, name)}")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise HarnessError(f"--json: the folder of {args.json} does not exist")
    torch.set_num_threads(args.threads)
    sizes = dict(rows=args.rows, features=args.features, hidden=(args.width,) * args.depth, epochs=args.epochs,
                 batch_size=args.batch_size, repeats=args.repeats)
    if windowed:
        figures = bench.bench_windows(n_windows=args.windows, seeds=args.seeds, **sizes)
        print(bench.format_windows_report(figures))
    else:
        figures = bench.bench_members(n_members=args.members, wide=None if args.no_wide else bench.WIDE, **sizes)
        if args.scale:
            figures["scaling"] = bench.bench_scaling(n_members=args.members, **sizes)
        print(bench.format_report(figures))
    if args.scale:
        from harness.bench import bench_scale, format_scale

        figures["end_to_end"] = bench_scale(repeats=args.repeats)
        print("\n" + format_scale(figures["end_to_end"]))
    _write_json(args.json, figures)
    return 0


def _cmd_bench_e2e(args: argparse.Namespace) -> int:
    """``harness bench --e2e``: no torch in this process (each side is a process of its own)."""
    from harness.bench.e2e import bench_e2e, format_e2e

    if args.scale:
        raise HarnessError("--e2e: times whole processes; run --scale separately")
    sizes = dict(windows=10 if args.windows is None else args.windows, rows=484 if args.rows is None else args.rows,
                 seeds=args.seeds, epochs=20 if args.epochs is None else args.epochs,
                 batch_size=64 if args.batch_size is None else args.batch_size,
                 threads=1 if args.threads is None else args.threads,
                 repeats=2 if args.repeats is None else args.repeats, width=args.width, depth=args.depth)
    for name, value in sizes.items():
        if value <= 0:
            raise HarnessError(f"--{name.replace('_', '-')}: must be > 0, got {value}")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise HarnessError(f"--json: the folder of {args.json} does not exist")
    figures = bench_e2e(sizes["windows"], rows=sizes["rows"], features=args.features,
                        hidden=(sizes["width"],) * sizes["depth"], seeds=sizes["seeds"], epochs=sizes["epochs"],
                        batch_size=sizes["batch_size"], threads=sizes["threads"], repeats=sizes["repeats"])
    print(format_e2e(figures))
    _write_json(args.json, figures)
    return 0


def _write_json(path: str | None, figures: dict[str, Any]) -> None:
    if not path:
        return
    try:
        Path(path).write_text(json.dumps(figures, indent=2, default=float))
    except OSError as exc:
        raise HarnessError(f"--json: cannot write {path}: {exc.strerror}") from None
