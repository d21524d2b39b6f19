"""``iotclass``: the offline tools (inspect, features, bench, train, evaluate, classify, pools).

The installed ``iotclass`` command is :mod:`controller_app.cli`, which adds the controller's
commands (``policy check``, ``devices``) to this parser: the library never imports the app.

Errors are printed as one line (``iotclass: error: ...``) with a non-zero exit status;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from datetime import datetime, timezone

from classifier import __version__
from classifier.errors import CaptureWarning, IotClassError
from classifier.parallel import add_runner_options
from classifier.pools.resolver import add_feature_pool_options, add_pools_command

EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(IotClassError):
    pass


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _labels(args):
    if not getattr(args, "devices", None):
        return None
    from classifier.capture.labels import load_datasets
    return load_datasets(args.devices)


def _print_table(rows: list[dict], columns: list[str], out=sys.stdout) -> None:
    if not rows:
        print("(no devices)", file=out)
        return
    text = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)), file=out)
    for t in text:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths)), file=out)


def _write_frame(frame, out: str) -> None:
    lower = out.lower()
    try:
        if lower.endswith(".csv"):
            frame.to_csv(out, index=False)
        elif lower.endswith(".parquet"):
            frame.to_parquet(out, index=False)
        else:
            raise CliError(f"--out {out}: unsupported format; use a .csv or .parquet file name")
    except OSError as exc:
        raise CliError(f"--out {out}: cannot write: {exc.strerror or exc}") from None


def _add_label_columns(frame, labels, path: str):
    if labels is None:
        return frame
    from classifier.capture.packets import mac_to_int
    names, cats, keys = [], [], []
    for mac in frame["mac"].tolist():
        dev = labels.label(path, mac_to_int(mac))
        names.append(dev.name if dev else "")
        cats.append(dev.category if dev else "")
        keys.append(dev.key if dev else "")
    frame["device"] = names
    frame["category"] = cats
    frame["device_key"] = keys
    return frame


# --------------------------------------------------------------------------- commands


def cmd_inspect(args) -> int:
    from classifier.features.pipeline import device_summary, load_captures
    from classifier.features.sessions import session_table
    import numpy as np
    labels = _labels(args)
    totals: dict[int, dict] = {}
    for cap in load_captures(args.pcap, args.gateway, labels):
        sess = session_table(cap.packets, cap.view, args.idle_timeout)
        n_sess = np.bincount(np.searchsorted(cap.view.macs, sess.mac), minlength=len(cap.view.macs))
        for mac, s in device_summary(cap.packets, cap.view, n_sess).items():
            t = totals.get(mac)
            if t is None:
                totals[mac] = dict(s)
                if labels is not None:
                    dev = labels.label(cap.path, mac)
                    totals[mac]["device"] = dev.name if dev else ""
                    totals[mac]["category"] = dev.category if dev else ""
            else:
                t["packets"] += s["packets"]
                t["bytes"] += s["bytes"]
                t["sessions"] += s["sessions"]
                t["first_ns"] = min(t["first_ns"], s["first_ns"])
                t["last_ns"] = max(t["last_ns"], s["last_ns"])
    from classifier.capture.packets import mac_to_str
    rows = []
    for mac in sorted(totals, key=lambda m: -totals[m]["packets"]):
        t = totals[mac]
        row = {"mac": mac_to_str(mac), "packets": t["packets"], "bytes": t["bytes"],
               "first_seen": _iso(t["first_ns"]), "last_seen": _iso(t["last_ns"]), "sessions": t["sessions"]}
        if labels is not None:
            row["device"] = t.get("device", "")
            row["category"] = t.get("category", "")
        rows.append(row)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        cols = ["mac", "packets", "bytes", "first_seen", "last_seen", "sessions"]
        if labels is not None:
            cols += ["category", "device"]
        _print_table(rows, cols)
    return 0


_PER_PROCESS: dict = {}


def _once(key, make):
    """What a worker process builds once and keeps (labels, a pool resolver, an engine)."""
    if key not in _PER_PROCESS:
        _PER_PROCESS[key] = make()
    return _PER_PROCESS[key]


def _job_labels(args):
    """In a worker: the command's --max-capture-size (a Dask or forkserver worker did not run
    :func:`main`), and its labels, read once per process."""
    if getattr(args, "max_capture_size", None):
        from classifier.capture.reader import set_max_capture_bytes
        set_max_capture_bytes(args.max_capture_size)
    return _once(("labels", tuple(args.devices or ())), lambda: _labels(args))


def _features_job(job):
    """One capture's feature table (``iotclass features``), in whichever process runs it."""
    import os as _os

    from classifier.features.pipeline import load_capture
    from classifier.features.segments import FEATURE_SETS, ccit_features, segment_features
    from classifier.features.sessions import session_table
    path, args = job
    labels = _job_labels(args)
    cap = load_capture(path, args.gateway, labels)
    if args.kind == "segments":
        frame = segment_features(cap.packets, cap.view, args.interval).to_frame()
        frame = frame[["mac", "segment", "start", "complete"] + FEATURE_SETS[args.set]]
    elif args.kind == "ccit":
        frame = ccit_features(cap.packets, cap.view, args.interval).to_frame()
    else:
        sess = session_table(cap.packets, cap.view, args.idle_timeout)
        if not args.no_pools:
            from classifier.pools.resolver import fill_pools, resolver_from_args
            fill_pools(sess, _once(("pools", _os.getpid()), lambda: resolver_from_args(args)))
        frame = sess.to_frame()
    frame.insert(0, "capture", _os.path.basename(cap.path))
    frame = _add_label_columns(frame, labels, cap.path)
    if labels is not None and args.labelled_only:
        frame = frame[frame["category"] != ""]
    if args.out.lower().endswith(".csv"):
        # the CSV text is formatted here, in the worker: the parent only writes it
        return frame, frame.to_csv(index=False, header=False)
    return frame, None


def _close_resolvers() -> None:
    for key in [k for k in _PER_PROCESS if k[0] == "pools"]:
        _PER_PROCESS.pop(key).close()


def cmd_features(args) -> int:
    import pandas as pd

    from classifier.parallel import runner_from_args
    if args.interval <= 0:
        raise CliError(f"--interval must be positive, got {args.interval}")
    with runner_from_args(args) as runner:
        parts = list(runner.map(_features_job, _jobs(args), desc="reading"))
    _close_resolvers()
    frames = [f for f, _ in parts]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    texts = [t for _, t in parts]
    if frames and all(t is not None for t in texts) and all(
            list(f.dtypes.items()) == list(frames[0].dtypes.items()) for f in frames):
        # the frames' own CSV text, joined: what out.to_csv writes, when every part has the same
        # columns and types (pd.concat keeps them then)
        try:
            with open(args.out, "w", newline="") as fh:
                fh.write(out.iloc[:0].to_csv(index=False))
                for t in texts:
                    fh.write(t)
        except OSError as exc:
            raise CliError(f"--out {args.out}: cannot write: {exc.strerror or exc}") from None
    else:
        _write_frame(out, args.out)
    print(f"wrote {len(out)} rows to {args.out}", file=sys.stderr)
    return 0


def _identity_job(job):
    """One capture's identity records and the labelled names of their devices."""
    from classifier.capture.packets import mac_to_str
    from classifier.features.pipeline import load_capture
    path, args = job
    labels = _job_labels(args)
    cap = load_capture(path, (), labels)
    names = {}
    if labels is not None:
        for mac in cap.identity.macs().tolist():
            dev = labels.label(cap.path, mac)
            if dev:
                names[mac_to_str(mac)] = f"{dev.name} ({dev.category})"
    return cap.identity, names


def _jobs(args) -> list:
    """(capture path, the command's arguments) for each capture the command names."""
    from classifier.capture.reader import capture_paths
    job = argparse.Namespace(**{k: v for k, v in vars(args).items() if k != "func"})
    return [(p, job) for p in capture_paths(args.pcap)]


def cmd_identity(args) -> int:
    from classifier.features.identity import IdentityRecords, format_summary, summarize
    from classifier.parallel import runner_from_args
    parts, names = [], {}
    with runner_from_args(args) as runner:
        for records, named in runner.map(_identity_job, _jobs(args), desc="reading"):
            parts.append(records)
            names.update(named)
    rows = summarize(IdentityRecords.concat(parts))
    if args.json:
        for row in rows:
            if row["mac"] in names:
                row["device"] = names[row["mac"]]
            for values in row["values"].values():
                for v in values:
                    v["first_seen"] = _iso(v["first_ns"])
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        print(format_summary(rows, args.max_values, names))
    return 0


def cmd_bench(args) -> int:
    from classifier.features.throughput import format_throughput, measure
    result = measure(args.pcap, repeat=args.repeat, profile=args.profile)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print(format_throughput(result))
    return 0


def _datasets_args(args) -> list[str]:
    from classifier.evaluation.training import default_roots
    roots = args.datasets or default_roots()
    if not roots:
        raise CliError("no labelled captures: pass --datasets FOLDER (one holding devices.csv files), "
                       "or put them in ../shared/datasets")
    return roots


def cmd_train(args) -> int:
    from classifier.models.registry import Settings
    from classifier.evaluation.training import train_default
    settings = Settings(interval=args.interval, t=args.window, overlap=args.window // 2, n=args.sessions,
                        epochs=args.epochs)
    from classifier.parallel import runner_from_args
    with runner_from_args(args) as runner:
        engine = train_default(_datasets_args(args), args.out, seed=args.seed, settings=settings,
                               log=lambda m: print(m, file=sys.stderr), runner=runner)
    if args.site:                  # the site's pinned devices, folded into the identity voter (not the behaviour models)
        from classifier.engine.engine import DEFAULT_ENGINE
        from classifier.identity.site import SiteError, read_site_examples
        try:
            learned = engine.learn_site(read_site_examples(args.site))
        except SiteError as exc:
            raise CliError(str(exc)) from None
        engine.save(args.out or DEFAULT_ENGINE)
        print(f"site examples from {args.site}: {learned.get('devices', 0)} pinned devices "
              f"{learned.get('categories', {})}, {learned.get('tokens_added', 0)} new tokens", file=sys.stderr)
    return 0


def cmd_evaluate(args) -> int:
    from dataclasses import replace
    from pathlib import Path

    from classifier.evaluation import protocols as ev
    from classifier.models.registry import ALL_MODELS, SPECS
    roots = _datasets_args(args)
    models = ALL_MODELS if args.models == "all" else args.models.split(",")
    unknown = [m for m in models if m not in SPECS]
    if unknown:
        raise CliError(f"--models: unknown model(s) {', '.join(unknown)}; known: {', '.join(SPECS)}")
    out = Path(args.out)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    data_names = [args.data] if args.data else (["sentinel", "long"] if args.protocol in ("unseen", "openset")
                                                else ["sentinel", "home"] if args.protocol == "online"
                                                else ["long"] if args.protocol == "sensitivity"
                                                else ["home"] if args.protocol in ("time", "iot")
                                                else ["sentinel", "home"])
    if args.protocol in ("lovo", "cross", "fusion-openset", "fusion-known"):
        return _evaluate_generalisation(args, roots, out, log)
    for name in data_names:
        settings = ev.DEFAULT_SETTINGS[name]
        overrides = {k: v for k, v in (("interval", args.interval), ("t", args.window), ("n", args.sessions),
                                       ("epochs", args.epochs)) if v is not None}
        if "t" in overrides:
            overrides["overlap"] = overrides["t"] // 2
        settings = replace(settings, **overrides)
        log(f"== {args.protocol} on {name}")
        if args.protocol == "online":
            from classifier.evaluation.online import run_online
            result = run_online(name, roots, folds=args.folds, seed=args.seed, log=log,
                                behaviour_only=args.behaviour_only)
            ev.save_result(result, out, f"online-{name}" + ("-behaviour" if args.behaviour_only else ""))
            print(json.dumps(result["summary"], indent=1))
            from classifier.evaluation.devices import format_devices
            ds = result["device_summary"]
            print(format_devices({"all": ds["overall"]} | ds["by_dataset"], result["devices"]))
            continue
        data = ev.load_data(name, roots, settings)
        if args.protocol == "sensitivity":
            result = ev.run_sensitivity(data, models[0] if args.models != "all" else "lstm-cnn", seeds=args.seeds,
                                        seed=args.seed, log=log)
            ev.save_result(result, out, f"sensitivity-{name}")
            for p in ev.plot_sensitivity(result, out):
                log(f"wrote {p}")
            print(json.dumps(result["curves"], indent=1))
            continue
        if args.protocol == "openset":
            result = ev.run_openset(data, models, seed=args.seed, log=log)
            ev.save_result(result, out, f"openset-{name}")
            print(json.dumps({m: {k: v for k, v in r.items() if k != "left_out"} for m, r in result["models"].items()},
                             indent=1))
            continue
        from classifier.parallel import runner_from_args
        with runner_from_args(args) as runner:
            result = ev.run_protocol(args.protocol, data, models, seeds=args.seeds, folds=args.folds, seed=args.seed,
                                     log=log, runner=runner)
        path = ev.save_result(result, out, f"{args.protocol}-{name}")
        print(ev.format_summary(result))
        print()
        print(ev.format_per_class(result, [m for m in ("ccit", "nba", "nba-vol", "lstm-cnn", "lstm-cnn-all")
                                           if m in models]))
        print()
        for m in result["per_class"]:
            ev.plot_confusion(result, m, out / f"confusion-{args.protocol}-{name}-{m}.png")
        log(f"wrote {path} and confusion matrices in {out}")
    return 0


def _evaluate_generalisation(args, roots, out, log) -> int:
    from dataclasses import replace

    from classifier.evaluation import generalisation as gen
    from classifier.evaluation import protocols as ev
    from classifier.capture.labels import Dataset, load_datasets
    from classifier.evaluation.training import LONG, EarlyData
    settings = replace(ev.DEFAULT_SETTINGS["all"], **({"epochs": args.epochs} if args.epochs else {}))
    ds = load_datasets(roots)
    data = EarlyData("all", ds, settings)
    long_ds = Dataset([c for c in ds.captures if c.dataset in LONG])
    long = ev.Data("long", long_ds, settings, data.cache) if long_ds.captures else None
    records = gen.RecordSource(data)
    if not any(records(i) for i in range(len(data.streams))):
        log("iotclass: warning: the captures carry no identity records: the identity voter stays silent")
    result = gen.run_generalisation(args.protocol, data, long, records, folds=args.folds, seed=args.seed,
                                    online=not args.no_online, log=log, probes=args.probes)
    ev.save_result(result, out, f"{args.protocol}-all" + ("-probes" if args.probes else ""))
    print(gen.format_table(result))
    return 0


def _network_gateways(args, caps, labels) -> set[int]:
    """--gateway when given (an override); else the gateways found in the captures. Gateways
    the labels name are never devices either."""
    from classifier.capture.packets import mac_to_str
    from classifier.features.devices import as_mac_ints
    from classifier.pools.network import find_gateways
    gateways = set(as_mac_ints(args.gateway).tolist())
    if not gateways:
        found: dict[int, tuple[int, int]] = {}
        for cap in caps:
            for mac, counts in find_gateways(cap.packets).items():
                old = found.get(mac, (0, 0))
                found[mac] = (max(old[0], counts[0]), max(old[1], counts[1]))
        for mac, (v4, v6) in sorted(found.items()):
            print(f"iotclass: gateway {mac_to_str(mac)} (found: carries {v4} off-link IPv4 addresses, "
                  f"{v6} IPv6 /64s; --gateway overrides)", file=sys.stderr)
        if not found:
            print("iotclass: warning: no gateway found (no traffic leaves the link); pass --gateway MAC "
                  "if one is there", file=sys.stderr)
        gateways = set(found)
    if labels is not None:
        gateways |= labels.gateways()
    return gateways


def _verdict(engine, pk, mac, identity=None) -> dict:
    dec = engine.decide(pk, mac, identity=identity)
    if dec is None:
        return dict(category="", confidence=0.0, decision="learning", model=engine.version,
                    explanation="not enough evidence yet")
    return dict(category=dec.category, confidence=round(dec.confidence, 4), decision=dec.stage, model=dec.model,
                explanation=dec.explanation)


def _capture_job(job):
    """One capture read, decoded and split (``iotclass classify``), in whichever process runs it."""
    from classifier.features.pipeline import load_capture
    path, args = job
    return load_capture(path, args.gateway, _job_labels(args))


def cmd_classify(args) -> int:
    import numpy as np

    from classifier.capture.packets import mac_to_str
    from classifier.engine.engine import load_engine
    from classifier.features.devices import split_devices
    from classifier.parallel import runner_from_args
    from classifier.pools.network import join_captures
    engine = load_engine(args.model)                # a wrong --model said before any capture is read
    labels = _labels(args)
    with runner_from_args(args) as runner:
        caps = list(runner.map(_capture_job, _jobs(args), desc="reading"))
    gateways = sorted(_network_gateways(args, caps, labels))
    rows = []
    if args.per_file:
        for cap in caps:
            view = split_devices(cap.packets, gateways=gateways)
            for d, mac in enumerate(view.macs.tolist()):
                row = {"mac": mac_to_str(mac), "capture": os.path.basename(cap.path)}
                row.update(_verdict(engine, cap.packets, mac, cap.identity.for_mac(mac)))
                row["packets"] = int(view.start[d + 1] - view.start[d])
                if labels is not None:
                    dev = labels.label(cap.path, mac)
                    row["true_category"] = dev.category if dev else ""
                rows.append(row)
    else:
        # one network: every device one stream across the captures, in time order
        pk, source = join_captures([c.packets for c in caps])
        from classifier.features.identity import IdentityRecords
        identity = IdentityRecords.concat([c.identity for c in caps])
        view = split_devices(pk, gateways=gateways)
        for d, mac in enumerate(view.macs.tolist()):
            sl = view.entries(d)
            row = {"mac": mac_to_str(mac)}
            row.update(_verdict(engine, pk, mac, identity.for_mac(mac)))
            ts = pk.ts_ns[view.pkt[sl]]
            row.update(packets=sl.stop - sl.start, captures=int(len(np.unique(source[view.pkt[sl]]))),
                       first_seen=_iso(int(ts.min())), last_seen=_iso(int(ts.max())))
            if labels is not None:
                devs = [labels.label(c.path, mac) for c in caps]
                dev = next((x for x in devs if x), None)
                row["true_category"] = dev.category if dev else ""
            rows.append(row)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        cols = ["mac", "category", "confidence", "decision", "packets"]
        if not args.per_file:
            cols.append("captures")
        if labels is not None:
            cols.append("true_category")
        cols += ["model", "explanation"]
        if args.per_file and len(caps) > 1:
            cols.insert(0, "capture")
        _print_table(rows, cols)
    return 0


# --------------------------------------------------------------------------- parser


def _size(text: str) -> int:
    from classifier.capture.reader import parse_size
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_size_limit(parser, default) -> None:
    """--max-capture-size, on the main parser and (so that it may follow the command) on the
    commands that read captures."""
    parser.add_argument("--max-capture-size", type=_size, default=default, metavar="SIZE",
                        help="refuse captures larger than this once decompressed, e.g. 4G or 512M "
                             "(default $IOT_MAX_CAPTURE_SIZE, else 1G)")


def build_parser(extra=None) -> argparse.ArgumentParser:
    """The ``iotclass`` parser; ``extra(subparsers)`` adds more commands (the controller's)."""
    p = argparse.ArgumentParser(prog="iotclass", description="Offline tools of the IoT device classifier.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    _add_size_limit(p, None)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp, labels=True):
        sp.add_argument("pcap", nargs="+", metavar="PCAP", help="capture files (pcap/pcapng, optionally .gz/.xz/.bz2) or folders of them")
        _add_size_limit(sp, argparse.SUPPRESS)
        sp.add_argument("--gateway", action="append", default=[], metavar="MAC",
                        help="a gateway/router MAC, never treated as a device (repeatable)")
        if labels:
            sp.add_argument("--devices", action="append", metavar="CSV",
                            help="devices.csv (or a folder holding some) labelling the captures' devices")

    sp = sub.add_parser("inspect", help="per device: packets, bytes, first/last seen, sessions")
    common(sp)
    sp.add_argument("--json", action="store_true", help="a JSON list of objects")
    sp.add_argument("--idle-timeout", type=float, default=60.0, metavar="S", help="session idle timeout (s)")
    sp.set_defaults(func=cmd_inspect)

    sp = sub.add_parser("features", help="segment, session or CCIT features to CSV/Parquet")
    sp.add_argument("kind", choices=["segments", "sessions", "ccit"])
    common(sp)
    sp.add_argument("--interval", type=float, default=300.0, metavar="S",
                    help="segment (and CCIT window) length in seconds (default 300)")
    sp.add_argument("--set", choices=["all", "paper"], default="all",
                    help="segment features: all, or the paper's six most discriminating")
    sp.add_argument("--idle-timeout", type=float, default=60.0, metavar="S", help="session idle timeout (s)")
    sp.add_argument("--labelled-only", action="store_true", help="only rows of devices the labels name")
    sp.add_argument("--out", required=True, metavar="FILE", help="output .csv or .parquet")
    add_feature_pool_options(sp)
    add_runner_options(sp)
    sp.set_defaults(func=cmd_features)

    sp = sub.add_parser("identity", help="per device: what it says about itself (DHCP, DNS, mDNS, SSDP, TLS, HTTP)")
    sp.add_argument("pcap", nargs="+", metavar="PCAP", help="capture files (pcap/pcapng, optionally .gz/.xz/.bz2) or folders of them")
    sp.add_argument("--devices", action="append", metavar="CSV",
                    help="devices.csv (or a folder holding some) naming the captures' devices")
    sp.add_argument("--json", action="store_true", help="a JSON list of objects")
    sp.add_argument("--max-values", type=int, default=10, metavar="N",
                    help="distinct values shown per kind (0: all; the JSON has all)")
    add_runner_options(sp)
    sp.set_defaults(func=cmd_identity)

    sp = sub.add_parser("bench", help="packets/s: parse, and parse + features (segments and sessions)")
    sp.add_argument("pcap", nargs="+", metavar="PCAP")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--repeat", type=int, default=3, help="best of N runs for each figure")
    sp.add_argument("--profile", action="store_true",
                    help="also where the time goes: read, decode, identity records, split, segments, sessions")
    sp.set_defaults(func=cmd_bench)

    sp = sub.add_parser("train", help="train the default engine (session + segment models) on labelled captures")
    sp.add_argument("--datasets", action="append", metavar="FOLDER",
                    help="folders holding devices.csv files (default: ../shared/datasets)")
    sp.add_argument("--out", metavar="FOLDER", help="where to save (default: the package's shipped default)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--interval", type=float, default=300.0, metavar="S", help="segment interval T (s)")
    sp.add_argument("--window", type=int, default=6, metavar="T", help="segments per window t")
    sp.add_argument("--sessions", type=int, default=16, metavar="N", help="sessions per sequence n")
    sp.add_argument("--epochs", type=int, help="override the models' epoch counts")
    sp.add_argument("--site", metavar="INVENTORY", help="a controller's inventory: its pinned devices' categories and "
                                                        "identity records are folded into the identity voter as this "
                                                        "site's examples (the behaviour models are not retrained on them)")
    add_runner_options(sp, "engine's two behaviour models")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("evaluate", help="evaluation protocols: tables, JSON and plots")
    sp.add_argument("protocol", choices=["unseen", "known", "time", "iot", "sensitivity", "openset", "online",
                                         "lovo", "cross", "fusion-openset", "fusion-known"])
    sp.add_argument("--data", choices=["sentinel", "long", "home", "all"],
                    help="data selection (default: the protocol's usual ones)")
    sp.add_argument("--models", default="nba,nba-vol,lstm-cnn,lstm-cnn-all,ccit",
                    help="comma-separated model names, or 'all' (see README)")
    sp.add_argument("--datasets", action="append", metavar="FOLDER")
    sp.add_argument("--seeds", type=int, default=5, help="repetitions of the unseen-device split")
    sp.add_argument("--folds", type=int, default=5)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--interval", type=float, metavar="S")
    sp.add_argument("--window", type=int, metavar="T")
    sp.add_argument("--sessions", type=int, metavar="N")
    sp.add_argument("--epochs", type=int, help="override every model's epoch count")
    sp.add_argument("--no-online", action="store_true",
                    help="lovo/cross/fusion-openset: whole-stream decisions only, no replay")
    sp.add_argument("--behaviour-only", action="store_true",
                    help="online: the engine without its identity voter (the engine before identity evidence)")
    sp.add_argument("--probes", action="store_true",
                    help="lovo/cross/fusion-openset/fusion-known, online: simulate the controller's identity probes "
                         "(a device's own mDNS records answered 2 s after its first packet)")
    sp.add_argument("--out", default="results", metavar="FOLDER")
    add_runner_options(sp, "runs (a model on a fold or split; unseen, known, time, iot)")
    sp.set_defaults(func=cmd_evaluate)

    sp = sub.add_parser("classify", help="per device: category, confidence, decision, explanation",
                        description="Captures of one network: each device is one stream across the files, in "
                                    "time order, with one verdict (--per-file: one per capture). The gateway is "
                                    "found in the traffic; --gateway overrides it.")
    common(sp)
    sp.add_argument("--per-file", action="store_true", help="a verdict per device and capture")
    sp.add_argument("--model", metavar="PATH", help="a saved engine folder (default: the shipped one)")
    sp.add_argument("--json", action="store_true", help="a JSON list of objects")
    add_runner_options(sp)
    sp.set_defaults(func=cmd_classify)

    add_pools_command(sub)
    from classifier.identity.commands import add_knowledge_command
    add_knowledge_command(sub)
    if extra is not None:
        extra(sub)
    return p


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    parser = parser or build_parser()
    args = parser.parse_args(argv)

    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f"iotclass: warning: {message}", file=sys.stderr)

    from classifier.capture.reader import set_max_capture_bytes
    previous_limit = set_max_capture_bytes(args.max_capture_size) if args.max_capture_size else None
    try:
        # a command of its own: its warnings all shown (not folded into the same text an earlier
        # command in this process issued from the same line), the warning printer put back after
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            return args.func(args) or 0
    except KeyboardInterrupt:
        print("iotclass: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. head: not an error
        sys.stdout = open(os.devnull, "w")
        return 0
    except (IotClassError, ValueError, OSError) as exc:
        if args.debug:
            raise
        print(f"iotclass: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - anything else is a bug, still said in one line
        if args.debug:
            raise
        text = " ".join(str(exc).split())
        text = text if len(text) <= 300 else text[:297] + "..."
        print(f"iotclass: error: {type(exc).__name__}: {text} (--debug shows the traceback)", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if args.max_capture_size:
            set_max_capture_bytes(previous_limit)


if __name__ == "__main__":
    sys.exit(main())
