"""The ``ecg-monitor`` command. Each subcommand parses flags into typed options and calls a
plain function; bad arguments give a message and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from protocol.strip import Strip

log = logging.getLogger("ecg_monitor")

EXIT_USAGE = 2


class UsageError(Exception):
    """A bad argument found after parsing; reported like argparse's own errors."""


def _number(text: str, kind: type = float) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _fraction(text: str) -> float:
    v = _number(text)
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1): {text!r}")
    return float(v)


def _positive(kind: type = float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        v = _number(text, kind)
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
        return v

    return parse


def _nonneg(text: str) -> float:
    v = _number(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return float(v)


def _url(text: str) -> str:
    from protocol.urls import parse_url

    try:
        parse_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _add_mqtt_flags(p: argparse.ArgumentParser) -> None:
    """TLS and password options for MQTT URLs (a URL's own password works too, with a warning)."""
    g = p.add_argument_group("MQTT security")
    g.add_argument("--mqtt-ca", help="CA file that signed the broker's certificate, for mqtts:// (default: system CAs)")
    g.add_argument("--mqtt-cert", help="client certificate (PEM), for brokers that require one")
    g.add_argument("--mqtt-key", help="the client certificate's private key (PEM, unencrypted)")
    g.add_argument(
        "--mqtt-password-file",
        help="file whose first line is the password for a URL that names a user "
        "(or set $ECG_MONITOR_MQTT_PASSWORD); keeps it out of ps",
    )


def _mqtt_kw(a: argparse.Namespace, url: str) -> dict[str, Any]:
    """``{"mqtt": MqttSecurity}`` for simulate/replay/subscribe options, or {} when ``url`` is not
    MQTT or no MQTT security option is set (flags or $ECG_MONITOR_MQTT_PASSWORD). Bad files: a
    usage error."""
    from monitor.transports.tls import PASSWORD_ENV, MqttSecurity, TlsError

    given = (a.mqtt_ca, a.mqtt_cert, a.mqtt_key, a.mqtt_password_file)
    if not url.startswith("mqtt") or (all(v is None for v in given) and not os.environ.get(PASSWORD_ENV)):
        return {}
    try:
        sec = MqttSecurity.load(ca=a.mqtt_ca, cert=a.mqtt_cert, key=a.mqtt_key, password_file=a.mqtt_password_file)
        if not sec.tls.is_default:
            sec.tls.client_context()  # bad files fail here, before any connection
    except TlsError as exc:
        raise UsageError(str(exc)) from None
    return {"mqtt": sec}


def _add_curve_client_flags(p: argparse.ArgumentParser) -> None:
    """ZeroMQ CURVE keys of a client (simulate, replay, subscribe); both or neither."""
    g = p.add_argument_group("ZeroMQ CURVE")
    g.add_argument("--curve-server", metavar="FILE", help="the daemon's public certificate (NAME.key)")
    g.add_argument("--curve-secret", metavar="FILE", help="this client's own secret certificate (NAME.key_secret)")


def _curve_kw(a: argparse.Namespace) -> dict[str, Any]:
    """``curve_server``/``curve_secret`` for the options, checked now: a bad file is a usage error."""
    from monitor.transports.curve import ClientKeys, CurveError

    try:
        ClientKeys.optional(a.curve_server, a.curve_secret)
    except CurveError as exc:
        raise UsageError(str(exc)) from None
    return {"curve_server": a.curve_server, "curve_secret": a.curve_secret}


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# -- subcommands ------------------------------------------------------------------------


def cmd_run(a: argparse.Namespace) -> int:
    from monitor.config import MonitorConfig
    from monitor.server import run

    cfg = MonitorConfig.load(
        a.config,
        ingest=tuple(a.ingest) if a.ingest else None,
        alarms=tuple(a.alarms) if a.alarms else None,
        journal=a.journal,
        metrics_port=a.metrics_port,
        hop_s=a.hop,
        window_s=a.window,
        pause_threshold_s=a.pause_threshold,
        model_path=a.model,
        rules_only=True if a.rules_only else None,
        require_model=True if a.require_model else None,
        shard=a.shard,
        console=False if a.no_console else None,
        log_level=a.log_level,
        precision=a.precision,
        mqtt_ca=a.mqtt_ca,
        mqtt_cert=a.mqtt_cert,
        mqtt_key=a.mqtt_key,
        mqtt_password_file=a.mqtt_password_file,
        curve_secret=a.curve_secret,
        curve_clients=a.curve_clients,
        insecure=True if a.insecure else None,
    )
    _setup_logging(cfg.log_level)
    code = run(cfg, duration_s=a.duration)
    if code != 0:
        # A failed daemon exits now, even if a hung inference thread would block the
        # interpreter's exit: the service manager must see it die and restart it.
        logging.shutdown()
        os._exit(code)
    return code


def cmd_simulate(a: argparse.Namespace) -> int:
    from simulators.simulate import SimulateOptions, simulate

    _setup_logging(a.log_level)
    try:
        opts = SimulateOptions(
            to=a.to,
            patients=a.patients,
            scenario=a.scenario,
            duration=a.duration,
            speed=a.speed,
            seed=a.seed,
            fs=a.fs,
            frame_s=a.frame,
            truth=a.truth,
            t0=a.t0,
            prefix=a.prefix,
            **_mqtt_kw(a, a.to),
            **_curve_kw(a),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    sent = asyncio.run(simulate(opts))
    log.info("sent %d frames", sent)
    return 0


def cmd_replay(a: argparse.Namespace) -> int:
    from simulators.replay import ReplayOptions, replay

    _setup_logging(a.log_level)
    if a.stream_id and len(a.stream_id) != len(a.records):
        raise UsageError("give one --stream-id per record")
    opts = ReplayOptions(
        records=tuple(a.records),
        to=a.to,
        speed=a.speed,
        start=a.start,
        duration=a.duration,
        loop=a.loop,
        t0=a.t0,
        frame_s=a.frame,
        truth=a.truth,
        stream_ids=tuple(a.stream_id) if a.stream_id else None,
        **_mqtt_kw(a, a.to),
        **_curve_kw(a),
    )
    try:
        sent = asyncio.run(replay(opts))
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    log.info("sent %d frames", sent)
    return 0


def cmd_subscribe(a: argparse.Namespace) -> int:
    from simulators.subscribe import SubscribeOptions, subscribe

    _setup_logging(a.log_level)
    opts = SubscribeOptions(
        source=a.source,
        json=a.json,
        streams=tuple(a.stream or ()),
        events=tuple(a.event or ()),
        priorities=tuple(a.priority or ()),
        count=a.count,
        duration=a.duration,
        **_mqtt_kw(a, a.source),
        **_curve_kw(a),
        on_strip=_strip_saver(a.strips) if a.strips else None,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(subscribe(opts))
    return 0


def _strip_saver(folder: str) -> Callable[[Strip], object]:
    """Save each strip as ``FOLDER/<strip id>.png``."""
    from station.strip_png import save_strip

    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--strips: cannot create {folder}: {exc}") from None

    def save(strip: Strip) -> object:
        path = save_strip(strip, out / f"{strip.strip_id}.png")
        log.info("strip saved: %s", path)
        return path

    return save


def cmd_strip(a: argparse.Namespace) -> int:
    """Render saved strips (JSON from the journal's strips folder or a subscriber) as PNG."""
    from protocol.strip import Strip
    from station.strip_png import save_strip

    _setup_logging(a.log_level)
    if a.out and len(a.files) > 1 and not Path(a.out).is_dir():
        raise UsageError("-o: with several strips, give a folder")
    for name in a.files:
        src = Path(name)
        try:
            strip = Strip.from_json(src.read_bytes())
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{name}: not a strip message: {exc}") from None
        if a.out is None:
            dest = src.with_suffix(".png")
        elif Path(a.out).is_dir():
            dest = Path(a.out) / f"{strip.strip_id}.png"
        else:
            dest = Path(a.out)
        save_strip(strip, dest, dpi=a.dpi)
        print(dest)
    return 0


def cmd_station(a: argparse.Namespace) -> int:
    from station.server import StationConfig, StationError, parse_http, run_station

    _setup_logging(a.log_level)
    sources = tuple(a.source or ("tcp://127.0.0.1:5556",))
    try:
        host, port = parse_http(a.http)
        cfg = StationConfig(
            sources=sources, host=host, port=port, insecure=a.insecure, **_mqtt_kw(a, sources[0]), **_curve_kw(a)
        )
    except StationError as exc:
        raise UsageError(str(exc)) from None

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if a.duration:
            loop.call_later(a.duration, stop.set)
        return await run_station(cfg, stop, on_ready=lambda url: print(f"central station: {url}", flush=True))

    return asyncio.run(main())


def cmd_keygen(a: argparse.Namespace) -> int:
    from monitor.transports.curve import CurveError, keygen

    _setup_logging(a.log_level)
    try:
        public, secret = keygen(a.dir, a.name, a.streams)
    except CurveError as exc:
        raise UsageError(str(exc)) from None
    print(f"public certificate {public} (give it to the other side)")
    print(f"secret certificate {secret} (mode 0600; keep it here)")
    return 0


def cmd_score(a: argparse.Namespace) -> int:
    from simulators.score import format_table, read_jsonl, score
    from simulators.subscribe import load_alarms

    try:
        truth = read_jsonl(a.truth)
        alarms = load_alarms(a.alarms)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise UsageError(str(exc)) from None
    result = score(truth, alarms, pause_threshold_s=a.pause_threshold)
    print(json.dumps(result, indent=2) if a.json else format_table(result))
    return 0


def cmd_classify(a: argparse.Namespace) -> int:
    import numpy as np

    from classifier import MLECGClassifier, RuleBasedClassifier

    _setup_logging(a.log_level)
    try:
        import wfdb
    except ImportError:
        raise UsageError("classify needs wfdb: pip install 'ecg-monitor[train]'") from None
    path = a.record[:-4] if a.record.endswith(".hea") else a.record
    try:
        hdr = wfdb.rdheader(path)
    except (FileNotFoundError, OSError):
        raise UsageError(f"no WFDB record at {path}") from None
    fs = float(hdr.fs)
    start = int(a.start * fs)
    stop = min(int(hdr.sig_len), start + int(a.duration * fs))
    if stop - start < 10 * fs:
        raise UsageError(f"--start {a.start} leaves less than 10 s of {path}")
    rec = wfdb.rdrecord(path, sampfrom=start, sampto=stop)
    sig = np.asarray(rec.p_signal, dtype=np.float64)
    ch2 = sig[:, 1] if sig.shape[1] > 1 else None
    clf = RuleBasedClassifier() if a.rules else MLECGClassifier(a.model)
    c = clf.classify(sig[:, 0], ch2, fs)
    out = {
        "record": path,
        "start_s": a.start,
        "duration_s": (stop - start) / fs,
        "fs": fs,
        "event": c.event,
        "confidence": round(c.confidence, 4),
        "event_index": c.event_index,
        "event_time_s": None if c.event_index is None else round(a.start + c.event_index / fs, 3),
        "explanation": c.explanation,
        "source": c.source,
    }
    if a.json:
        print(json.dumps(out))
    else:
        when = "" if out["event_time_s"] is None else f" at {out['event_time_s']:.1f} s"
        print(
            f"{path} [{a.start:.0f}-{a.start + out['duration_s']:.0f} s]: {c.event} ({c.confidence:.2f}, {c.source}){when}"
        )
        print(f"  {c.explanation}")
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from classifier.training.pack import PackError
    from classifier.training.records import TRAIN_SOURCES
    from classifier.training.train import TrainConfig, train

    _setup_logging(a.log_level)
    sources = tuple(x.strip() for x in a.sources.split(",") if x.strip()) if a.sources else TRAIN_SOURCES
    try:
        cfg = TrainConfig(
            seed=a.seed,
            max_epochs=a.epochs,
            epoch_size=a.epoch_size,
            patience=a.patience,
            device=a.device,
            out_dir=a.out,
            data_dir=a.data,
            limit_records=a.limit_records,
            threads=a.threads,
            rhythm_only=a.rhythm_only,
            stretch=a.stretch,
            lead_swap=a.lead_swap,
            pack=a.pack,
            sources=sources,
            max_minutes=a.max_minutes,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        train(cfg)
    except (FileNotFoundError, PackError) as exc:
        raise UsageError(str(exc)) from None
    return 0


def cmd_pack_data(a: argparse.Namespace) -> int:
    from pathlib import Path

    from classifier.training.pack import write_pack
    from classifier.training.records import TRAIN_SOURCES, list_records, split_of

    _setup_logging(a.log_level)
    root = Path(a.data) if a.data else None
    splits = set(a.splits.split(","))
    if not splits <= {"train", "val", "test"}:
        raise UsageError(f"--splits takes train, val and test, not {a.splits!r}")
    names = [n for n in list_records(root, TRAIN_SOURCES) if split_of(n) in splits]
    if not names:
        raise UsageError("no WFDB records found; set ECG_DATA_DIR or pass --data")
    write_pack(Path(a.out), names, root)
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    _setup_logging(a.log_level)
    if a.loso:
        from classifier.training.loso import run as loso

        if a.sources or a.update_card or a.split != "test":
            raise UsageError("--loso scores leave-one-source-out runs; no --sources/--update-card/--split")
        try:
            loso(
                Path(a.loso),
                Path(a.out) / "loso_network.md",
                Path(a.data) if a.data else None,
                Path(a.model) if a.model else None,
            )
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        return 0
    if a.sources:
        from classifier.training.system_eval import run as system_eval

        if a.model or a.update_card or a.split != "test":
            raise UsageError(
                "--sources evaluates the shipped classifier on the test splits; no --model/--update-card/--split"
            )
        try:
            system_eval(Path(a.out) / "evaluation_sources.md", Path(a.data) if a.data else None, quick=a.quick)
        except FileNotFoundError as exc:
            raise UsageError(f"{exc} (the PhysioNet folder: set ECG_DATA_DIR)") from None
        return 0
    from classifier.training.evaluate import evaluate

    try:
        evaluate(model_path=a.model, out_dir=a.out, data_dir=a.data, update_card=a.update_card, split=a.split)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    return 0


def cmd_train_af(a: argparse.Namespace) -> int:
    from pathlib import Path

    from classifier.training.af_rr import run as train_af

    _setup_logging(a.log_level)
    try:
        train_af(Path(a.out_model), Path(a.report))
    except FileNotFoundError as exc:
        raise UsageError(f"{exc} (the PhysioNet folder: set ECG_DATA_DIR)") from None
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    _setup_logging(a.log_level)
    if a.faults:
        from app.faults import run_faults

        results = run_faults(out=a.out or "reports/reliability.md", quick=a.quick, only=a.only)
        return 0 if all(r.passed for r in results) else 1
    if a.only:
        raise UsageError("--only picks fault scenarios: use it with --faults")
    from app.bench import run_bench

    run_bench(out=a.out or "reports/bench.md", quick=a.quick)
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from app.demo import demo

    _setup_logging(a.log_level)
    return demo(patients=a.patients, duration=a.duration, seed=a.seed, console=not a.no_console)


# -- parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ecg-monitor", description="Real-time arrhythmia monitor for two-lead ECG.")
    p.add_argument("--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run the monitor daemon")
    r.add_argument("--config", help="TOML config file ([monitor] table)")
    r.add_argument("--ingest", action="append", type=_url, help="ingest URL, repeatable (default tcp://127.0.0.1:5555)")
    r.add_argument("--alarms", action="append", type=_url, help="alarm URL, repeatable (default tcp://127.0.0.1:5556)")
    r.add_argument("--journal", help="append every alarm to this JSON-lines file")
    r.add_argument("--metrics-port", type=int, help="Prometheus port (default 9108, 0 = off)")
    r.add_argument("--hop", type=_positive(), help="seconds between evaluations of a stream (default 2)")
    r.add_argument("--window", type=_positive(), help="seconds of signal per evaluation, 10-90 (default 10)")
    r.add_argument("--pause-threshold", type=_positive(), help="R-R gap that is a pause, s (default 3)")
    r.add_argument("--model", help="model weights (default: shipped model, or $ECG_MONITOR_MODEL)")
    r.add_argument("--rules-only", action="store_true", help="use the rule-based classifier only")
    r.add_argument(
        "--require-model",
        action="store_true",
        help="exit instead of falling back to the rules when the model is missing or fails its SHA-256 check",
    )
    r.add_argument("--precision", choices=["float32", "bfloat16", "auto"], help="network arithmetic (default auto)")
    r.add_argument("--shard", help="K/N: keep only streams whose id hashes to K of N")
    r.add_argument("--no-console", action="store_true", help="no live console")
    r.add_argument("--duration", type=_positive(), help="stop after this many seconds")
    _add_mqtt_flags(r)
    g = r.add_argument_group("ZeroMQ CURVE")
    g.add_argument("--curve-secret", metavar="FILE", help="the daemon's own secret certificate (NAME.key_secret)")
    g.add_argument("--curve-clients", metavar="DIR", help="folder of the client public certificates (*.key) accepted")
    g.add_argument(
        "--insecure",
        action="store_true",
        help="allow binding ZeroMQ on a non-loopback address without CURVE, and metrics without TLS (warns)",
    )
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("simulate", help="stream synthetic patients")
    s.add_argument("--to", type=_url, default="tcp://127.0.0.1:5555")
    s.add_argument("--patients", type=_positive(int), default=8)
    s.add_argument("--scenario", choices=["normal", "af", "vt", "pause", "mixed"], default="mixed")
    s.add_argument("--duration", type=_positive(), default=120.0, help="seconds of signal per patient")
    s.add_argument("--speed", type=_nonneg, default=1.0, help="1 = real time, 0 = as fast as possible")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--fs", type=_positive(), default=250.0)
    s.add_argument("--frame", type=_positive(), default=0.2, help="frame length, 0.1-0.25 s")
    s.add_argument("--truth", help="write ground-truth episodes (JSON lines) here")
    s.add_argument("--t0", type=_nonneg, help="stream time of the first sample (default now)")
    s.add_argument("--prefix", default="sim", help="stream id prefix")
    _add_mqtt_flags(s)
    _add_curve_client_flags(s)
    s.set_defaults(func=cmd_simulate)

    rp = sub.add_parser("replay", help="replay WFDB records as live streams")
    rp.add_argument("records", nargs="+", help="record paths, e.g. ../shared/data/mitdb/208")
    rp.add_argument("--to", type=_url, default="tcp://127.0.0.1:5555")
    rp.add_argument("--speed", type=_nonneg, default=1.0)
    rp.add_argument("--start", type=_nonneg, default=0.0, help="seconds into the record")
    rp.add_argument("--duration", type=_positive(), help="seconds to replay")
    rp.add_argument("--loop", action="store_true")
    rp.add_argument(
        "--t0",
        type=_nonneg,
        help="stream time of the record's sample 0, so the first replayed sample is at T0 + --start "
        "(0 = record time); default: the first replayed sample is sent at now",
    )
    rp.add_argument("--frame", type=_positive(), default=0.2)
    rp.add_argument("--truth", help="write the annotated AF/VTACH/PAUSE episodes here")
    rp.add_argument("--stream-id", action="append", help="stream id per record (default: record name)")
    _add_mqtt_flags(rp)
    _add_curve_client_flags(rp)
    rp.set_defaults(func=cmd_replay)

    sb = sub.add_parser("subscribe", help="show alarms as they arrive")
    sb.add_argument("--from", dest="source", type=_url, default="tcp://127.0.0.1:5556")
    sb.add_argument("--json", action="store_true", help="one JSON object per line")
    sb.add_argument("--stream", action="append")
    sb.add_argument("--event", action="append", choices=["AF", "VTACH", "PAUSE", "NO_SIGNAL", "LEADS_OFF"])
    sb.add_argument("--priority", action="append", choices=["high", "medium", "low"])
    sb.add_argument("--count", type=_positive(int), help="exit after this many alarms")
    sb.add_argument("--duration", type=_positive(), help="exit after this many seconds")
    sb.add_argument("--strips", metavar="DIR", help="save each alarm's strip here as a PNG on ECG paper")
    _add_mqtt_flags(sb)
    _add_curve_client_flags(sb)
    sb.set_defaults(func=cmd_subscribe)

    sp = sub.add_parser("strip", help="render alarm strips (JSON) as PNG on ECG paper: 25 mm/s, 10 mm/mV")
    sp.add_argument("files", nargs="+", help="strip files, e.g. <journal>.strips/<strip id>.json")
    sp.add_argument("-o", "--out", help="PNG file, or a folder (default: beside each strip)")
    sp.add_argument("--dpi", type=_positive(int), default=150)
    sp.set_defaults(func=cmd_strip)

    st = sub.add_parser("station", help="central station: a live web page of every bed of one or more daemons")
    st.add_argument(
        "--from",
        dest="source",
        action="append",
        type=_url,
        help="daemon alarm URL, repeatable (default tcp://127.0.0.1:5556)",
    )
    st.add_argument("--http", default="127.0.0.1:8080", help="HOST:PORT to serve the page on (default 127.0.0.1:8080)")
    st.add_argument("--insecure", action="store_true", help="allow a non-loopback --http (the page has no login)")
    st.add_argument("--duration", type=_positive(), help="stop after this many seconds")
    _add_mqtt_flags(st)
    _add_curve_client_flags(st)
    st.set_defaults(func=cmd_station)

    k = sub.add_parser("keygen", help="write a ZeroMQ CURVE certificate pair (NAME.key, NAME.key_secret)")
    k.add_argument("dir", help="folder to write into (created if missing)")
    k.add_argument("--name", required=True, help="certificate name: the file name and the sender's identity")
    k.add_argument(
        "--streams", metavar="REGEX", help="stream ids this key may send (fullmatch), e.g. 'bed-1|bed-2'; default any"
    )
    k.set_defaults(func=cmd_keygen)

    sc = sub.add_parser("score", help="score alarms against ground truth")
    sc.add_argument("--truth", required=True)
    sc.add_argument("--alarms", required=True, help="alarms as JSON lines (subscribe --json, or a journal)")
    sc.add_argument("--pause-threshold", type=_positive(), default=3.0)
    sc.add_argument("--json", action="store_true")
    sc.set_defaults(func=cmd_score)

    c = sub.add_parser("classify", help="classify a 90 s stretch of a WFDB record")
    c.add_argument("record")
    c.add_argument("--start", type=_nonneg, default=0.0)
    c.add_argument("--duration", type=_positive(), default=90.0)
    c.add_argument("--json", action="store_true")
    c.add_argument("--rules", action="store_true", help="rule-based classifier only")
    c.add_argument("--model")
    c.set_defaults(func=cmd_classify)

    t = sub.add_parser("train", help="train the network on the shared databases")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--epochs", type=_positive(int), default=30)
    t.add_argument("--epoch-size", type=_positive(int), default=6000)
    t.add_argument("--patience", type=_positive(int), default=6)
    t.add_argument(
        "--max-minutes",
        type=_positive(),
        help="wall-clock budget: stop after the epoch that passes it, keeping the best epoch (default: none)",
    )
    t.add_argument("--device", default="cpu")
    t.add_argument("--threads", type=_positive(int), default=2)
    t.add_argument("--out", default="models")
    t.add_argument("--data", help="PhysioNet folder (default $ECG_DATA_DIR or ../shared/data)")
    t.add_argument("--limit-records", type=_positive(int), help="train on this many records (smoke runs)")
    t.add_argument("--pack", help="read the records from a pack made by 'pack-data' instead of --data")
    t.add_argument("--rhythm-only", type=_fraction, default=0.0, help="share of NORMAL/AF windows with leads blanked")
    t.add_argument(
        "--stretch", type=_fraction, default=0.0, help="time-stretch NORMAL/AF windows by up to this fraction"
    )
    t.add_argument("--lead-swap", type=_fraction, default=0.0, help="probability of swapping the leads")
    t.add_argument(
        "--sources",
        help="comma-separated sources to train on (default mitdb,vfdb,svdb,cinc2017; leave one out for its "
        "leave-one-source-out figures)",
    )
    t.set_defaults(func=cmd_train)

    pk = sub.add_parser("pack-data", help="pack records at the model rate into one file, for training elsewhere")
    pk.add_argument("--out", required=True, help="the pack to write (derived data: keep it out of git)")
    pk.add_argument("--data")
    pk.add_argument("--splits", default="train,val", help="comma-separated splits to pack (default train,val)")
    pk.set_defaults(func=cmd_pack_data)

    e = sub.add_parser("evaluate", help="evaluate model and rules on held-out records")
    e.add_argument("--model")
    e.add_argument("--out", default="reports")
    e.add_argument("--data")
    e.add_argument("--split", default="test", choices=["test", "val"])
    e.add_argument("--update-card", action="store_true", help="write the test figures into the model card")
    e.add_argument(
        "--sources",
        action="store_true",
        help="cross-source system evaluation: every source through the per-bed core, targets met or missed "
        "(writes evaluation_sources.md)",
    )
    e.add_argument("--quick", action="store_true", help="with --sources: a small subset of each source (smoke run)")
    e.add_argument(
        "--loso",
        metavar="RUNS",
        help="score leave-one-source-out networks (one 'train --sources' output folder each under RUNS) on the "
        "source each left out, beside --model or the shipped network (writes loso_network.md)",
    )
    e.set_defaults(func=cmd_evaluate)

    af = sub.add_parser(
        "train-af", help="fit the R-R AF detector on every source; write models/af_rr.json and reports/af_rr.md"
    )
    af.add_argument("--out-model", default="models/af_rr.json")
    af.add_argument(
        "--report", default="reports/af_rr.md", help="markdown report; the figures also go to .json beside it"
    )
    af.set_defaults(func=cmd_train_af)

    b = sub.add_parser("bench", help="run the benchmarks, write reports/bench.md (or reliability.md with --faults)")
    b.add_argument("--out", help="report path (default reports/bench.md, or reports/reliability.md with --faults)")
    b.add_argument("--quick", action="store_true", help="smaller sizes / shorter scenarios, for a smoke run")
    b.add_argument(
        "--faults",
        action="store_true",
        help="run the fault-injection suite (broker and daemon kills, overload, poison input) instead",
    )
    b.add_argument(
        "--only",
        action="append",
        choices=["alarm_broker", "ingest_broker", "daemon_kill", "overload", "poison"],
        help="with --faults: run just this scenario (repeatable)",
    )
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("demo", help="daemon + synthetic ward on ZeroMQ, with console and summary")
    d.add_argument("--patients", type=_positive(int), default=8)
    d.add_argument("--duration", type=_positive(), default=90.0)
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--no-console", action="store_true")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "run" and args.log_level is None:
        args.log_level = "INFO"
    from monitor.config import ConfigError

    try:
        return int(args.func(args))
    except (UsageError, ConfigError) as exc:
        parser.exit(EXIT_USAGE, f"ecg-monitor {args.command}: error: {exc}\n")
    except OSError as exc:
        parser.exit(1, f"ecg-monitor {args.command}: error: {exc}\n")
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
