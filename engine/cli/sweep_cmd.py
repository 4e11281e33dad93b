"""`aba sweep`, `aba queue` and `aba sweep-report`: many runs from one config, queued on the GPU(s), ranked."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from engine.cli.common import console, when
from engine.cli.output import print_table
from engine.errors import UserError
from engine.runner import supervisor as sup
from engine.sweep import queue as q
from engine.text import inert


def _list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def cmd_sweep(args: argparse.Namespace) -> int:
    from engine.sweep import emit, grid, sweeps

    root = sup.runs_dir(args.runs_dir)
    configs = [Path(c) for c in ([args.config] if args.config else []) + _list(args.configs)]
    if not configs:
        raise UserError("aba sweep: give a CONFIG (or --configs a.toml,b.toml)")
    stages = sup.parse_stages(args.stages) if args.stages else None
    if args.objective not in sweeps.OBJECTIVES:
        raise UserError(f"--objective {args.objective!r}: use one of {', '.join(sweeps.OBJECTIVES)}")
    sweep_id = sweeps.new_sweep_id()
    plans, keys = grid.plan(configs, args.grid or [], args.set or [], n_random=args.random, sweep_id=sweep_id,
                            yes=args.yes)
    if args.emit:
        if args.data_from:
            from engine.runner import datasource

            datasource.load_source(args.data_from, root, sup.resolve_run)
        cmds = emit.commands(root, sweep_id, plans, stages=stages, data_from=args.data_from)
        text = emit.slurm(sweep_id, cmds, root) if args.emit == "slurm" else emit.script(sweep_id, cmds)
        out = Path(args.out) if args.out else root / "sweeps" / sweep_id / ("sweep.sbatch" if args.emit == "slurm" else "sweep.sh")
        out.write_text(text, encoding="utf-8")
        out.chmod(0o755)
        sweeps._write_json(root / sweeps.SWEEPS_DIR / f"{sweep_id}.json", {
            "id": sweep_id, "created": time.time(), "keys": keys, "objective": args.objective,
            "configs": [str(c) for c in configs], "stages": stages, "data_from": args.data_from, "runs": [],
            "reference_weights": sweeps.reference_weights(configs[0], args.set or []),
            "emitted": {"kind": args.emit, "file": str(out), "names": [p.name for p in plans]}})
        print(f"sweep {sweep_id}", flush=True)
        print(f"{len(plans)} runs written as {'a Slurm job array' if args.emit == 'slurm' else 'a script'}: {out}")
        print(f"when they have run: aba sweep-report {sweep_id} --runs-dir {root}")
        return 0
    made = sweeps.create(root, sweep_id, plans, keys, stages=stages, data_from=args.data_from, objective=args.objective,
                         reference_weights=sweeps.reference_weights(configs[0], args.set or []))
    q.add(root, [d.name for d in made])
    pid = q.ensure_driver(root)
    print(f"sweep {sweep_id}", flush=True)
    for d, p in zip(made, plans):
        print(f"queued {d.name}  {inert(p.name, oneline=True)}")
    print(f"{len(made)} runs queued" + (f"; queue driver pid {pid}" if pid else "; the running queue driver takes them"))
    print(f"watch with `aba queue`; rank with `aba sweep-report {sweep_id}`")
    return 0


def cmd_queue(args: argparse.Namespace) -> int:
    root = sup.runs_dir(args.runs_dir)
    if args.action == "cancel":
        was = q.cancel(root, _one(args))
        print(f"{args.run_id}: {'cancelled' if was == 'queued' else 'cancel asked (it was running)'}")
        return 0
    if args.action == "move":
        if args.position is None and len(args.run_id) == 2 and args.run_id[1].isdigit():
            args.position = int(args.run_id.pop())
        if args.position is None:
            raise UserError("aba queue move RUN_ID POSITION: POSITION is 1 for next")
        print(f"{args.run_id}: now #{q.move(root, _one(args), args.position)} in the queue")
        return 0
    if args.action == "add":
        if not args.run_id:
            raise UserError("aba queue add RUN_ID [RUN_ID ...]")
        ids = [sup.resolve_run(r, root).name for r in args.run_id]
        added = q.add(root, ids, resume=True)
        pid = q.ensure_driver(root)
        print(f"{len(added)} run(s) queued" + (f"; queue driver pid {pid}" if pid else ""))
        return 0
    state = q.read(root)
    rows = state["entries"] if args.all else [e for e in state["entries"] if e["state"] in q.ACTIVE]
    if args.json:
        print(json.dumps({"driver": state.get("driver"), "driver_alive": q.driver_alive(state), "entries": rows}, indent=2))
        return 0
    names = {s.id: s.name for s in sup.list_runs(root)} if rows else {}
    pos = q.positions(root)
    print_table(("#", "run", "name", "state", "gpu", "added", "started", "result"),
                [(pos.get(e["run"], ""), e["run"], names.get(e["run"], ""), e["state"], e.get("gpu") or "",
                  when(e.get("added")), when(e.get("started")), e.get("result") or "") for e in rows],
                title=f"queue in {root}" + (" (driver running)" if q.driver_alive(state) else ""))
    return 0


def _one(args: argparse.Namespace) -> str:
    if not args.run_id or len(args.run_id) != 1:
        raise UserError(f"aba queue {args.action} RUN_ID: one run id")
    return args.run_id[0]


def cmd_sweep_report(args: argparse.Namespace) -> int:
    from engine.dims import SHORT
    from engine.sweep.report import fmt, sweep_report

    root = sup.runs_dir(args.runs_dir)
    out = sweep_report(root, args.sweep, args.objective)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    from rich.table import Table
    from rich.text import Text

    c = console()
    if not c.is_terminal:
        c.width = 200
    short = {k: k.rsplit(".", 1)[-1] for k in out["keys"]}
    t = Table("rank", "run", *short.values(), "state", out["objective"], "95% interval", "vs best (paired)", "tied?",
              title=f"sweep {out['sweep']}: {out['finished']}/{out['total']} runs finished, ranked by {out['objective']}",
              caption="held-out answers scored with the base config's reward weights, the same for every run"
              if out["objective"] == "heldout" else None)
    for r in out["runs"]:
        vb = r["vs_best"]
        t.add_row(str(r["rank"] or ""), r["id"], *[Text(str(r["params"].get(k))) for k in out["keys"]], r["state"],
                  fmt(r["value"]), f"{fmt(r['lo'])} .. {fmt(r['hi'])}" if r["lo"] is not None else "",
                  f"{vb['delta']:+.3f} [{fmt(vb['lo'])}, {fmt(vb['hi'])}]" if vb and vb["lo"] is not None else "",
                  "best" if r["id"] == out["best"] else ("yes" if r["id"] in out["tied_with_best"] else "no" if r["value"] is not None else ""))
    c.print(t)
    if out["best"]:
        tied = out["tied_with_best"]
        c.print(f"best: {out['best']}; " + (f"not told apart from it (95%): {', '.join(tied)}" if tied
                else "every other run is worse beyond the 95% interval"), markup=False)
    for key, e in out["effects"].items():
        c.print(f"{key}: mean {out['objective']} by value: " + ", ".join(f"{v}={m:.3f}" for v, m in e["means"].items()),
                markup=False)
        if e.get("dimension_slopes"):
            c.print("  held-out score change per unit weight: " + ", ".join(
                f"{SHORT[d]} {s:+.3f}" for d, s in e["dimension_slopes"].items()), markup=False)
    if out["plot"]:
        c.print(f"plot: {out['plot']}", markup=False)
    if out["best_config"]:
        c.print(f"best config: {out['best_config']}  (run it with `aba run {out['best_config']}`)", markup=False)
    return 0


def register(add) -> None:
    sp = add("sweep", cmd_sweep, "Many runs from one config: the product of --grid lists (or --random N samples), "
             "created and queued; runs whose SFT inputs match train SFT once.")
    sp.add_argument("config", nargs="?", help="the base config (or --configs for several)")
    sp.add_argument("--grid", action="append", metavar="KEY=V1,V2",
                    help="a swept key and its values (repeatable); with --random also KEY=LO..HI or LO..HI:log")
    sp.add_argument("--random", type=int, metavar="N", help="N random samples instead of the full product")
    sp.add_argument("--configs", metavar="A.toml,B.toml", help="compare whole configs (e.g. Strategy A vs B)")
    sp.add_argument("--stages", help="comma-separated stages of every run (default: each config's run.stages)")
    sp.add_argument("--objective", default="heldout", help="what ranks the runs: heldout (default), reward, rating")
    sp.add_argument("--data-from", metavar="RUN_ID|PATH", help="every run takes its data from this run or file")
    sp.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="change a key in every run")
    sp.add_argument("--yes", action="store_true", help="allow a sweep of more than 1,000 runs")
    sp.add_argument("--emit", choices=("script", "slurm"),
                    help="do not queue: write the runs as `aba run` lines (a script or a Slurm job array)")
    sp.add_argument("--out", help="where --emit writes (default: RUNS/sweeps/SWEEP/sweep.sh or sweep.sbatch)")

    sp = add("queue", cmd_queue, "The run queue: list it, or cancel, move or add runs.")
    sp.add_argument("action", nargs="?", choices=("list", "cancel", "move", "add"), default="list")
    sp.add_argument("run_id", nargs="*")
    sp.add_argument("--position", type=int, help="for move: 1 = next to start")
    sp.add_argument("--all", action="store_true", help="also finished entries")
    sp.add_argument("--json", action="store_true")

    sp = add("sweep-report", cmd_sweep_report, "A sweep's runs ranked by the objective with 95% intervals, the "
             "effect of each swept key, a plot, and the best config as TOML.")
    sp.add_argument("sweep")
    sp.add_argument("--objective", help="heldout (default), reward or rating")
    sp.add_argument("--json", action="store_true")
