"""``pocnode simulate``: a federation of N engines in virtual time (pocnode/sim)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from pocnode.cli.render import table

# The progress bar appears once a run has taken this long (wall clock): short runs
# print their table and nothing else.
PROGRESS_AFTER_S = 3.0

_LATENCY_HELP = ("One-way delay per message, in ms: N (constant), uniform:LO:HI, exp:MEAN, "
                 "exp:MIN:MEAN (MIN plus an exponential), normal:MEAN:SD.")


def _parse(kind: Any, text: str | None, param: str) -> Any:
    from pocnode.sim.network import SimOptionError

    if text is None:
        return None
    try:
        return kind.parse(text)
    except SimOptionError as exc:
        raise click.BadParameter(exc.message, param_hint=param) from None


class _Progress:
    """A rich progress bar on stderr, shown only once the run is slow enough to want one."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.started = time.monotonic()
        self.bar: Any = None
        self.task: Any = None

    def __call__(self, phase: str, done: float, virtual_s: float) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            if time.monotonic() - self.started < PROGRESS_AFTER_S:
                return
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("simulating: {task.fields[phase]:<7}"), BarColumn(),
                                TextColumn("{task.percentage:>5.1f}% of updates delivered"),
                                TextColumn("{task.fields[virtual]}"), TimeElapsedColumn(),
                                console=Console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task("run", total=1.0, virtual="", phase="")
        self.bar.update(self.task, completed=done, phase=phase,
                        virtual=f"virtual {virtual_s:,.1f} s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@click.command()
@click.option("--nodes", type=click.IntRange(2, 100_000), default=100, show_default=True,
              help="Nodes in the federation, one member each.")
@click.option("--fanout", type=click.IntRange(0, 64), default=3, show_default=True,
              help="Peers a node announces fresh events to (0: none; anti-entropy rounds "
                   "alone, the push-pull process of the theory).")
@click.option("--interval-ms", type=click.IntRange(10, 3_600_000), default=1000,
              show_default=True, help="Gossip interval (one anti-entropy round each).")
@click.option("--loss", type=click.FloatRange(0, 1, max_open=True), default=0.0,
              show_default=True,
              help="Fraction of messages lost (requests and answers alike); a lost message "
                   "makes the caller fail after --timeout-ms, as a broken connection does.")
@click.option("--latency-ms", "latency", default="uniform:20:150", show_default=True,
              help=_LATENCY_HELP)
@click.option("--partition", "partitions", multiple=True, metavar="SPLIT_S:HEAL_S[:FRACTION]",
              help="Split the nodes in two sides (FRACTION on one, default 0.5) from SPLIT_S "
                   "to HEAL_S seconds after the first update; repeatable.")
@click.option("--churn", metavar="FRACTION[:MEAN_DOWN_S]",
              help="Honest nodes go down and come back from the first update on: FRACTION "
                   "of the time down, outages of MEAN_DOWN_S seconds on average (10).")
@click.option("--byzantine", metavar="FRACTION[:BEHAVIOUR,...]",
              help="That fraction of nodes is Byzantine, behaviours given in turn among: "
                   "drop, lie, replay, equivocate, flood (all if none named). "
                   "E.g. 0.1:drop,lie,replay,equivocate,flood.")
@click.option("--updates", type=click.IntRange(0, 10_000), default=1, show_default=True,
              help="Records published by honest nodes chosen at random.")
@click.option("--update-every-ms", type=click.IntRange(0, 3_600_000), default=1000,
              show_default=True, help="Time between two updates.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=1, show_default=True,
              help="Same seed, same run, same JSON.")
@click.option("--node-keys", is_flag=True,
              help="Every node first publishes its node.keys (TLS pin, HPKE key): calls are "
                   "then authenticated and members values are pulled. At most 1024 nodes.")
@click.option("--timeout-ms", type=click.IntRange(1, 3_600_000), default=10_000,
              show_default=True, help="A call's deadline (the daemon's request_timeout_s).")
@click.option("--header-bytes", type=click.IntRange(0, 65_536), default=0, show_default=True,
              help="Bytes added to each message for HTTP/TLS framing (0: bodies only).")
@click.option("--max-virtual-s", type=click.FloatRange(1, 86_400), default=600.0,
              show_default=True, help="Stop this long after the first update at the latest.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a PNG of coverage over rounds against theory (needs the [sim] "
                   "extra: matplotlib).")
def simulate(nodes: int, fanout: int, interval_ms: int, loss: float, latency: str,
             partitions: tuple[str, ...], churn: str | None, byzantine: str | None,
             updates: int, update_every_ms: int, seed: int, node_keys: bool, timeout_ms: int,
             header_bytes: int, max_virtual_s: float, as_json: bool, plot: Path | None) -> None:
    """Simulate a federation: N nodes running pocnode's own engine over an in-memory
    network in virtual time, deterministic for a seed.

    Reports rounds and virtual seconds until 50%, 99% and 100% of honest nodes hold each
    update, bytes per node per update, redundancy and idle traffic, beside push-pull
    theory (log3 N + ln ln N rounds, Karp et al. 2000) and Serf's logistic model.

    Example: pocnode simulate --nodes 200 --loss 0.05 --byzantine 0.1:drop,lie --seed 7
    """
    from pocnode.sim import report
    from pocnode.sim.experiment import run
    from pocnode.sim.network import Latency, Partition, SimOptionError
    from pocnode.sim.runner import Byzantine, Churn, SimConfig

    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise click.UsageError("--plot needs matplotlib, an optional extra: "
                                   "pip install 'pocnode[sim]'") from None
    config = SimConfig(
        nodes=nodes, fanout=fanout, interval_ms=interval_ms, loss=loss,
        latency=_parse(Latency, latency, "--latency-ms"),
        partitions=tuple(_parse(Partition, p, "--partition") for p in partitions),
        churn=_parse(Churn, churn, "--churn"), byzantine=_parse(Byzantine, byzantine,
                                                                "--byzantine"),
        updates=updates, update_every_ms=update_every_ms, seed=seed, node_keys=node_keys,
        timeout_ms=timeout_ms, header_bytes=header_bytes, max_virtual_s=max_virtual_s)
    try:
        config.check()
    except SimOptionError as exc:
        raise click.BadParameter(exc.message, param_hint=exc.path) from None
    progress = _Progress(sys.stderr.isatty())
    started = time.monotonic()
    try:
        outcome = run(config, on_progress=progress)
    finally:
        progress.close()
    wall = time.monotonic() - started
    fig = report.figures(outcome)
    if plot is not None:
        report.plot(outcome, fig, plot)
    if as_json:
        click.echo(json.dumps(fig, indent=2, sort_keys=False))
        return
    table(f"pocnode simulate: {nodes} nodes, seed {seed}", ["figure", "measured", "reference"],
          report.rows(fig))
    click.echo(f"{outcome.actions:,} simulated actions in {wall:.1f} s of wall time"
               + (f"; chart written to {plot}" if plot is not None else ""))
