"""`difforge runs [RUNS_DIR]`: a table of the runs in a folder and their state."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "runs",
        help="list training runs (state, steps, loss, time, best metric)",
        description="List the runs in RUNS_DIR (default runs): name, state (finished, interrupted, running, stopped, broken), "
        "steps, last loss, training time, best evaluation metric and model file. The state is read from the run's files: "
        "running = no end line in log.txt and a file written in the last 5 minutes; stopped/interrupted runs can be resumed.",
    )
    p.add_argument("runs_dir", nargs="?", default="runs", metavar="RUNS_DIR", help="folder of runs (default runs)")
    p.add_argument("--json", action="store_true", help="print JSON (one object per run)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..train.runs import format_table, list_runs

    runs = list_runs(args.runs_dir)
    if args.json:
        import json

        print(json.dumps([{"name": r.name, "path": str(r.path), "state": r.state, "steps": r.steps, "last_loss": r.last_loss,
                           "elapsed_s": r.elapsed_s, "best": list(r.best) if r.best else None,
                           "model_file": str(r.model_file) if r.model_file else None, "note": r.note} for r in runs], indent=1))
        return 0
    if not runs:
        print(f"no runs in {args.runs_dir}")
        return 0
    print(format_table(runs))
    return 0
