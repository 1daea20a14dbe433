"""`difforge report RUN_DIR`: the run on one self-contained HTML page (report.html)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write a run's report.html (curves, previews, config)",
        description="Write RUN_DIR/report.html: one self-contained page (images embedded, no network) with the run's state "
        "and timing, loss curves per term (raw and smoothed), learning rate and throughput charts, evaluation numbers, "
        "the preview grids in step order, final per-class sample grids, the model file's description, the config and the log.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, e.g. runs/default")
    p.add_argument("--out", default=None, help="write the page here instead of RUN_DIR/report.html")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write the run's metrics, previews and config to RUN_DIR/tb for TensorBoard (needs difforge[tb])")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..train.report import write_report

    if args.tensorboard:
        from ..train.tensorboard import replay

        print(f"tensorboard: {replay(args.run_dir)}  (view: tensorboard --logdir {args.run_dir})")
    path = write_report(args.run_dir, args.out)
    print(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
