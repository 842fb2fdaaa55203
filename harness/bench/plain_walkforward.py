"""The plain torch script ``harness bench --e2e`` times against ``harness run``, as its own process.

What a user writes by hand for the same walk-forward backtest: read the S&P 500 CSV with pandas,
build the return-forecast features (the last ``lags`` daily log returns, the 21-day realized
volatility, 21/63/252-day momentum; target the next day's log return), cut rolling windows
(``train`` rows, ``purge`` rows skipped, ``test`` rows, stepped by ``test``), standardise each
window on its train rows, and train every schedule x seed member in turn: ``torch.manual_seed``,
an ``nn.Sequential`` MLP, ``torch.optim.AdamW`` with a torch LR scheduler stepped every batch, a
shuffled ``DataLoader``; then predict the window's test rows. It imports only numpy, pandas and
torch (no part of the harness), and it logs nothing and draws nothing: the baseline a user
compares ``harness run`` with.

Members, batches, inits and LR curves are the harness's (same seeds, same ``DataLoader`` order,
``nn.Linear`` init in the same order, ``CosineAnnealingLR``/``StepLR`` that the harness's tables
equal), so with ``--predictions`` the out-of-sample predictions can be compared with the run's.

    python plain_walkforward.py --csv data/sp500.csv --start 2015-03-27 --windows 10 \\
        [--threads 1] [--predictions out.npy]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

STARTED = time.perf_counter()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402


def features(path: str, start: str | None, lags: int) -> tuple[np.ndarray, np.ndarray]:
    """The return-forecast table: ``[n, lags + 4]`` features and the next day's log return."""
    prices = pd.read_csv(path)
    prices.index = pd.to_datetime(prices.pop(prices.columns[0]), format="mixed")
    close = prices["Adj Close"].astype(np.float64).sort_index()
    if start is not None:
        close = close[close.index >= pd.Timestamp(start)]
    returns = np.log(close).diff()
    log_close = np.log(close)
    columns = {f"ret_lag{lag}": returns.shift(lag) for lag in range(lags)}
    columns["vol_21"] = np.sqrt(np.square(returns).rolling(21, min_periods=21).mean() * 252)
    columns.update({f"mom_{w}": log_close - log_close.shift(w) for w in (21, 63, 252)})
    X = pd.DataFrame(columns, index=close.index)
    y = returns.rolling(1, min_periods=1).sum().shift(-1)
    keep = np.isfinite(X.to_numpy()).all(axis=1) & np.isfinite(y.to_numpy())
    return X.to_numpy()[keep], y.to_numpy()[keep]


def standardise(values: np.ndarray, fit: np.ndarray) -> np.ndarray:
    mean, std = fit.mean(axis=0), fit.std(axis=0)
    return ((values - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


def scheduler(name: str, optimizer: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LRScheduler:
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if name == "step":  # step_size 0.33 of the run, gamma 0.1
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=math.floor(0.33 * total + 0.5), gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def member(X: np.ndarray, y: np.ndarray, X_test: np.ndarray, schedule: str, seed: int, args: argparse.Namespace
           ) -> np.ndarray:
    """One member trained by hand; its test predictions (in the scaled target's units)."""
    torch.manual_seed(seed)
    sizes = [X.shape[1], *args.hidden]
    layers: list[nn.Module] = []
    for width_in, width_out in zip(sizes, sizes[1:]):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    net = nn.Sequential(*layers, nn.Linear(sizes[-1], 1))
    loader = DataLoader(TensorDataset(torch.as_tensor(X), torch.as_tensor(y)), batch_size=args.batch_size,
                        shuffle=True, generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.0)
    lr = scheduler(schedule, optimizer, args.epochs * len(loader))
    for _ in range(args.epochs):
        for xb, yb in loader:
            optimizer.zero_grad()
            nn.functional.mse_loss(net(xb).squeeze(-1), yb).backward()
            optimizer.step()
            lr.step()
    with torch.no_grad():
        return net(torch.as_tensor(X_test)).squeeze(-1).numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", required=True)
    parser.add_argument("--start")
    parser.add_argument("--windows", type=int, required=True)
    parser.add_argument("--train", type=int, default=484)
    parser.add_argument("--test", type=int, default=21)
    parser.add_argument("--purge", type=int, default=1)
    parser.add_argument("--lags", type=int, default=16)
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--schedules", nargs="+", default=["constant", "cosine", "step"])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--predictions", help="write the [windows, members, test] predictions (.npy)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    X, y = features(args.csv, args.start, args.lags)
    out = []
    for k in range(args.windows):
        train = slice(k * args.test, k * args.test + args.train)
        test = slice(train.stop + args.purge, train.stop + args.purge + args.test)
        if test.stop > len(X):
            print(f"plain: window {k} needs {test.stop} rows, the table has {len(X)}", file=sys.stderr)
            return 2
        X_train, X_test = standardise(X[train], X[train]), standardise(X[test], X[train])
        mean, std = y[train].mean(), y[train].std()
        y_train = ((y[train] - mean) / (std if std > 0 else 1.0)).astype(np.float32)
        members = [member(X_train, y_train, X_test, schedule, seed, args)
                   for schedule in args.schedules for seed in range(args.seeds)]
        out.append(np.stack(members).astype(np.float64) * (std if std > 0 else 1.0) + mean)
    if args.predictions:
        np.save(args.predictions, np.stack(out))
    print(json.dumps({"seconds": time.perf_counter() - STARTED, "windows": args.windows,
                      "members": len(args.schedules) * args.seeds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
