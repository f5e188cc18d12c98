"""MQTT security against a real mosquitto: TLS with a custom CA and client certificates
(``require_certificate true``), passwords from a file, the shipped ACL (deploy/mosquitto/acl),
metrics over HTTPS with client certificates, and no password in any log, error, metric or
journal line. Certificates are made at test time with the openssl CLI (EC keys: fast).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from app.localnet import mosquitto_binary as _mosquitto_binary
from monitor.config import ConfigError, MonitorConfig
from monitor.transports.mqtt_transport import MqttSource
from monitor.transports.tls import MqttSecurity, TlsError, TlsSettings, read_password
from protocol.alarm import Alarm
from protocol.urls import parse_url, redact_url
from protocol.wire import encode
from simulators.sender import FrameSender
from simulators.subscribe import alarms_from, messages_from
from tests.conftest import CLI, ROOT, free_port, wait_port
from tests.helpers import running_monitor, wait_for

DEPLOY = ROOT / "deploy" / "mosquitto"
FS = 250.0
#: The secrets the leak test looks for; distinctive so a hit is never a coincidence.
MONITOR_PW = "Mon-s3cret-7f3a9c"
VIEWER_PW = "View-s3cret-91b2e4"
BED_PW = "Bed-s3cret-c0ffee"
STATION_PW = "Stat-s3cret-5d1e22"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _ec_req(cwd: Path, name: str, cn: str) -> None:
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=cwd,
    )  # fmt: skip


def _ca(cwd: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "2", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=cwd,
    )  # fmt: skip


def _signed(cwd: Path, name: str, cn: str, ext: str, ca: str = "ca") -> None:
    _ec_req(cwd, name, cn)
    (cwd / f"{name}.ext").write_text(ext + "\n")
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=cwd,
    )  # fmt: skip


@dataclass(frozen=True)
class Pki:
    dir: Path
    ca: Path
    other_ca: Path  # a CA that signed nothing the broker uses
    client_cert: Path
    client_key: Path
    monitor_pw: Path
    viewer_pw: Path

    def security(self, password_file: Path | None = None, *, ca: Path | None = None, cert: bool = True) -> MqttSecurity:
        tls = TlsSettings(ca or self.ca, self.client_cert if cert else None, self.client_key if cert else None)
        return MqttSecurity(tls, read_password(password_file) if password_file else None)


def make_pki(d: Path) -> Pki:
    _ca(d, "ca")
    _ca(d, "other-ca")
    _signed(d, "server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth")
    _signed(d, "client", "ecg-client", "extendedKeyUsage=clientAuth")
    for f in d.glob("*.key"):
        f.chmod(0o600)
    mon, view = d / "monitor.pw", d / "viewer.pw"
    mon.write_text(MONITOR_PW + "\n")
    view.write_text(VIEWER_PW + "\n")
    return Pki(d, d / "ca.crt", d / "other-ca.crt", d / "client.crt", d / "client.key", mon, view)


class TlsBroker:
    """mosquitto started from the shipped deploy/mosquitto/mosquitto.conf, its paths and port
    rewritten to this test's certificates, password file and the shipped ACL."""

    def __init__(self, pki: Pki, d: Path) -> None:
        self.exe = _mosquitto_binary()
        self.port = free_port()
        passwd = d / "passwd"
        users = [
            ("ecg-monitor", MONITOR_PW),
            ("ecg-viewer", VIEWER_PW),
            ("ecg-station", STATION_PW),
            ("bed-1", BED_PW),
            ("bed-2", BED_PW),
        ]
        tool = shutil.which("mosquitto_passwd")
        if tool is None:
            pytest.fail("mosquitto_passwd is not installed (it comes with mosquitto)")
        for i, (user, pw) in enumerate(users):
            subprocess.run([tool, "-b", *(["-c"] if i == 0 else []), str(passwd), user, pw], check=True, timeout=30)
        subst = {
            "listener": f"{self.port} 127.0.0.1",
            "cafile": str(pki.ca),
            "certfile": str(pki.dir / "server.crt"),
            "keyfile": str(pki.dir / "server.key"),
            "password_file": str(passwd),
            "acl_file": str(DEPLOY / "acl"),
            "persistence": "false",
            "persistence_location": None,
        }
        lines = []
        for line in (DEPLOY / "mosquitto.conf").read_text().splitlines():
            key = line.split(" ", 1)[0]
            if key in subst:
                if subst[key] is not None:
                    lines.append(f"{key} {subst.pop(key)}")
                else:
                    subst.pop(key)
            else:
                lines.append(line)
        assert not subst, f"the shipped mosquitto.conf lacks {sorted(subst)}"
        assert "require_certificate true" in lines
        self.conf = d / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\nlog_dest stderr\nuser root\n")
        self.log = d / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, user: str | None = None, password: str | None = None) -> str:
        auth = f"{user}:{password}@" if password else f"{user}@" if user else ""
        return f"mqtts://{auth}127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_port(self.port)
        except TimeoutError:
            raise RuntimeError(f"mosquitto did not start: {self.log.read_text()}") from None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl CLI is needed to make test certificates")
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    b = TlsBroker(pki, tmp_path_factory.mktemp("broker"))
    b.start()
    yield b
    b.stop()


def frames(sid: str, n: int, seq0: int = 0, t0: float = 1000.0) -> list[bytes]:
    """``n`` frames of 0.2 s of a plain sine-ish two-lead signal (enough to be admitted after 2 s)."""
    t = np.arange(50) / FS
    return [
        encode(sid, seq0 + k, t0 + k * 0.2, FS, np.vstack([np.sin(2 * np.pi * (t + k * 0.2))] * 2) * 0.5)
        for k in range(n)
    ]


# -- units: URLs, settings, config -------------------------------------------------------------------


def test_endpoint_and_errors_never_show_the_password() -> None:
    ep = parse_url(f"mqtt://alice:{MONITOR_PW}@broker:1883")
    assert ep.password == MONITOR_PW
    for shown in (repr(ep), str(ep), f"{ep}", repr([ep])):
        assert MONITOR_PW not in shown and "alice" in shown
    assert str(ep) == "mqtt://alice:***@broker:1883"
    for bad in (f"mqtt://alice:{MONITOR_PW}@broker:port", f"mqtt://alice:{MONITOR_PW}", f"http://a:{MONITOR_PW}@h"):
        with pytest.raises(ValueError) as err:
            parse_url(bad)
        assert MONITOR_PW not in str(err.value) and "***" in str(err.value)
    assert redact_url(f"mqtt://a:{MONITOR_PW}@h/x@y") == "mqtt://a:***@y"  # the last "@" ends the userinfo


def test_config_repr_and_errors_redact(tmp_path: Path) -> None:
    cfg = MonitorConfig(
        ingest=(f"mqtt://alice:{MONITOR_PW}@broker:1883",), alarms=("mqtt://bob@broker",), mqtt_password=VIEWER_PW
    )
    assert "mqtt://alice:***@broker:1883" in repr(cfg) and "mqtt://bob@broker" in repr(cfg)
    assert MONITOR_PW not in repr(cfg) and VIEWER_PW not in repr(cfg) and MONITOR_PW not in str(cfg)
    with pytest.raises(ConfigError) as err:
        MonitorConfig(alarms=(f"mqtt://alice:{MONITOR_PW}@broker:nope",))
    assert str(err.value).startswith("alarms:") and MONITOR_PW not in str(err.value)
    toml = tmp_path / "c.toml"
    toml.write_text(f'[monitor]\ningest = ["mqtt://a:{MONITOR_PW}@h", 5]\nmqtt_password = 7\n')
    with pytest.raises(ConfigError) as err:
        MonitorConfig.load(toml, env={})
    assert MONITOR_PW not in str(err.value)
    # The password comes from the environment through the config; a file wins over it.
    env = {"ECG_MONITOR_MQTT_PASSWORD": VIEWER_PW}
    assert MonitorConfig.load(None, env=env).mqtt_security().password == VIEWER_PW
    pw = tmp_path / "pw"
    pw.write_text(MONITOR_PW + "\n")
    sec = MonitorConfig.load(None, env=env, mqtt_password_file=str(pw)).mqtt_security()
    assert sec.password == MONITOR_PW and MONITOR_PW not in repr(sec)
    assert sec.endpoint(parse_url("mqtt://bob@h")).password == MONITOR_PW
    assert sec.endpoint(parse_url("mqtt://h")).password is None  # no user: no password
    assert sec.endpoint(parse_url("mqtt://bob:other@h")).password == "other"  # the URL's own wins


def test_bad_tls_files_are_named_clearly(tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"^mqtt_ca: cannot read .*missing\.crt"):
        MonitorConfig(mqtt_ca=str(tmp_path / "missing.crt"))
    with pytest.raises(ConfigError, match="mqtt_key: needs mqtt_cert"):
        MonitorConfig(mqtt_key=str(pki.client_key))
    with pytest.raises(ConfigError, match="metrics_client_ca: needs TLS"):
        MonitorConfig(metrics_client_ca=str(pki.ca))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(TlsError, match=r"^mqtt_ca: .*junk\.pem.*no usable PEM"):
        TlsSettings(ca=junk).client_context()
    # A key that does not match the certificate: both files named, no key material quoted.
    with pytest.raises(TlsError) as err:
        TlsSettings(pki.ca, pki.client_cert, pki.dir / "server.key").client_context()
    assert "client.crt" in str(err.value) and "server.key" in str(err.value)
    assert "PRIVATE KEY" not in str(err.value)
    ctx = pki.security().tls.client_context()
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    # On the command line: exit code 2 and the file named, before any connection.
    from app.cli import main

    for argv in (
        ["subscribe", "--from", "mqtts://viewer@127.0.0.1:1", "--mqtt-ca", str(tmp_path / "missing.crt")],
        ["run", "--ingest", "mqtts://m@127.0.0.1:1", "--mqtt-password-file", str(tmp_path / "missing.pw")],
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert "cannot read" in capsys.readouterr().err


# -- against the TLS broker -----------------------------------------------------------------------------


async def test_mqtts_end_to_end_with_custom_ca_client_cert_and_https_metrics(
    tls_broker: TlsBroker, pki: Pki, tmp_path: Path
) -> None:
    """A TLS sender -> the daemon (TLS ingest, password from a file) -> TLS alarms -> a TLS viewer;
    the daemon's /metrics over HTTPS, client certificate required."""
    metrics_port = free_port()
    cfg_kw: dict[str, object] = {
        "ingest": (tls_broker.url("ecg-monitor"),),
        # ZeroMQ first: the harness's own collector listens there.
        "alarms": (f"tcp://127.0.0.1:{free_port()}", tls_broker.url("ecg-monitor")),
        "mqtt_ca": str(pki.ca),
        "mqtt_cert": str(pki.client_cert),
        "mqtt_key": str(pki.client_key),
        "mqtt_password_file": str(pki.monitor_pw),
        "rules_only": True,
        "metrics_port": metrics_port,
        "metrics_tls_cert": str(pki.dir / "server.crt"),
        "metrics_tls_key": str(pki.dir / "server.key"),
        "metrics_client_ca": str(pki.ca),
    }
    async with running_monitor(**cfg_kw) as h:
        sink = f"mqtt:127.0.0.1:{tls_broker.port}"
        assert await wait_for(
            lambda: (
                h.metric("ecg_transport_connected", {"transport": "mqtt"}) == 1
                and h.metric("ecg_transport_connected", {"transport": sink}) == 1
            ),
            10.0,
        ), "the daemon did not connect over TLS"
        got: list[Alarm] = []
        ready = asyncio.Event()

        async def view() -> None:
            sec = pki.security(pki.viewer_pw)
            async for a in alarms_from(tls_broker.url("ecg-viewer"), ready, mqtt=sec):
                got.append(a)

        viewer = asyncio.create_task(view())
        try:
            await asyncio.wait_for(ready.wait(), 10.0)
            sec = MqttSecurity(pki.security().tls, BED_PW)  # the device's own password
            async with FrameSender(tls_broker.url("bed-1"), mqtt=sec) as tx:
                for payload in frames("bed-1", 15):
                    await tx.send("bed-1", payload)
            assert await wait_for(lambda: h.metric("ecg_frames_ingested_total", {"transport": "mqtt"}) >= 15, 10.0)
            # The bed falls silent: NO_SIGNAL travels daemon -> broker -> viewer, all over TLS.
            assert await wait_for(lambda: any(a.stream_id == "bed-1" and a.state == "onset" for a in got), 15.0), got
            # The ECG behind the alarms (telemetry, strips) reaches a station user, never a plain viewer.
            station_file = pki.dir / "station-pw"
            station_file.write_text(STATION_PW + "\n")
            seen: dict[str, list[object]] = {"ecg-station": [], "ecg-viewer": []}

            async def telemetry(user: str, pw: Path) -> None:
                sec = pki.security(pw)
                async for m in messages_from(tls_broker.url(user), kinds=("telemetry",), mqtt=sec):
                    seen[user].append(m)

            readers = [
                asyncio.create_task(telemetry("ecg-station", station_file)),
                asyncio.create_task(telemetry("ecg-viewer", pki.viewer_pw)),
            ]
            try:
                assert await wait_for(lambda: bool(seen["ecg-station"]), 10.0), "no telemetry for the station user"
                await asyncio.sleep(1.5)
            finally:
                for t in readers:
                    t.cancel()
                await asyncio.gather(*readers, return_exceptions=True)
            assert not seen["ecg-viewer"], "the ACL let a plain viewer read ECG telemetry"
        finally:
            viewer.cancel()
            await asyncio.gather(viewer, return_exceptions=True)

        url = f"https://127.0.0.1:{metrics_port}/metrics"
        with_cert = ssl.create_default_context(cafile=str(pki.ca))
        with_cert.load_cert_chain(pki.client_cert, pki.client_key)
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, context=with_cert, timeout=5).read())
        assert b"ecg_frames_ingested_total" in body
        no_cert = ssl.create_default_context(cafile=str(pki.ca))
        with pytest.raises(OSError):  # the handshake is refused (URLError, SSLError or a reset)
            await asyncio.to_thread(lambda: urllib.request.urlopen(url, context=no_cert, timeout=5).read())
        with pytest.raises(OSError):  # plain HTTP is not served
            await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
            )


async def test_wrong_ca_fails_clearly_and_in_bounded_time(
    tls_broker: TlsBroker, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    t = time.monotonic()
    with pytest.raises(ConnectionError, match="certificate verif") as err:
        async with FrameSender(tls_broker.url("bed-1"), mqtt=MqttSecurity(pki.security(ca=pki.other_ca).tls, BED_PW)):
            pass
    assert time.monotonic() - t < 10.0
    assert "mqtt_ca" in str(err.value) and BED_PW not in str(err.value)
    # The daemon's source keeps retrying, and says why in its (rate-limited) warning.
    ep = pki.security(pki.monitor_pw, ca=pki.other_ca).endpoint(parse_url(tls_broker.url("ecg-monitor")))
    src = MqttSource(ep, tls_context=pki.security(ca=pki.other_ca).tls.client_context())
    caplog.set_level(logging.WARNING, logger="monitor.transports.mqtt_transport")

    async def pull() -> None:
        async for _ in src.frames():
            pass

    task = asyncio.create_task(pull())
    try:
        assert await wait_for(lambda: "TLS certificate verification failed" in caplog.text, 10.0), caplog.text
        assert not src.is_connected
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert MONITOR_PW not in caplog.text


async def test_no_client_certificate_is_refused(tls_broker: TlsBroker, pki: Pki) -> None:
    async def connect(url: str, sec: MqttSecurity | None) -> None:
        async with FrameSender(url, mqtt=sec):
            pass

    t = time.monotonic()
    no_cert, plain = await asyncio.gather(
        connect(tls_broker.url("bed-1"), MqttSecurity(pki.security(cert=False).tls, BED_PW)),
        connect(f"mqtt://bed-1:{BED_PW}@127.0.0.1:{tls_broker.port}", None),  # plain MQTT to the TLS port
        return_exceptions=True,
    )
    assert time.monotonic() - t < 10.0
    assert isinstance(no_cert, ConnectionError) and "--mqtt-cert" in str(no_cert), no_cert
    assert isinstance(plain, ConnectionError), plain
    assert BED_PW not in str(no_cert) + str(plain)


async def test_acl_binds_devices_to_their_own_bed(tls_broker: TlsBroker, pki: Pki) -> None:
    """The shipped ACL: bed-1's credentials cannot publish bed-2's samples or forge alarms; the
    daemon ingests bed-1's own frames; a viewer cannot publish samples."""
    async with running_monitor(
        ingest=(tls_broker.url("ecg-monitor"),),
        mqtt_ca=str(pki.ca),
        mqtt_cert=str(pki.client_cert),
        mqtt_key=str(pki.client_key),
        mqtt_password_file=str(pki.monitor_pw),
        rules_only=True,
    ) as h:
        assert await wait_for(lambda: h.metric("ecg_transport_connected", {"transport": "mqtt"}) == 1, 10.0)
        bed1 = MqttSecurity(pki.security().tls, BED_PW)
        async with FrameSender(tls_broker.url("bed-1"), mqtt=bed1) as tx:
            for payload in frames("bed-2", 15):  # bed-1 tries to be bed-2: dropped by the broker
                await tx.send("bed-2", payload)
            for payload in frames("bed-1", 15):  # then its own frames, on the same connection (in order)
                await tx.send("bed-1", payload)
        async with FrameSender(tls_broker.url("ecg-viewer"), mqtt=pki.security(pki.viewer_pw)) as tx:
            for payload in frames("bed-3", 15):
                await tx.send("bed-3", payload)
        assert await wait_for(lambda: "bed-1" in h.monitor.streams, 10.0)
        await asyncio.sleep(0.5)  # anything else in flight would arrive by now (it was sent first)
        assert h.metric("ecg_frames_ingested_total", {"transport": "mqtt"}) == 15
        assert set(h.monitor.streams) == {"bed-1"}


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return str(r.read().decode())
    except OSError:
        return ""


async def test_no_secret_in_logs_errors_metrics_or_journal(
    tls_broker: TlsBroker, pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The daemon CLI with one password in a URL and one from a file, at DEBUG (aiomqtt and paho
    log too), a TLS viewer CLI with the password in the environment: the secrets appear in no log
    line, journal line, metric, config repr or error message. Both connections must work, so the
    passwords were really used."""
    journal = tmp_path / "alarms.jsonl"
    mport = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECG_MONITOR_")}
    tls = ["--mqtt-ca", str(pki.ca), "--mqtt-cert", str(pki.client_cert), "--mqtt-key", str(pki.client_key)]
    daemon = subprocess.Popen(
        [*CLI, "--log-level", "DEBUG", "run", "--rules-only", "--no-console", "--duration", "60",
         "--ingest", tls_broker.url("ecg-monitor", MONITOR_PW),  # in the URL: works, with a warning
         "--alarms", tls_broker.url("ecg-monitor"), "--mqtt-password-file", str(pki.monitor_pw), *tls,
         "--journal", str(journal), "--metrics-port", str(mport)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    viewer = subprocess.Popen(
        [*CLI, "--log-level", "DEBUG", "subscribe", "--from", tls_broker.url("ecg-viewer"), *tls,
         "--json", "--count", "1", "--duration", "60"],
        cwd=ROOT, env={**env, "ECG_MONITOR_MQTT_PASSWORD": VIEWER_PW},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        sink = f"mqtt:127.0.0.1:{tls_broker.port}"
        up = re.compile(rf'ecg_transport_connected{{transport="mqtt"}} 1\.0[\s\S]*transport="{sink}"}} 1\.0|'
                        rf'transport="{sink}"}} 1\.0[\s\S]*ecg_transport_connected{{transport="mqtt"}} 1\.0')  # fmt: skip
        assert await wait_for(lambda: bool(up.search(_scrape(mport))), 25.0), _scrape(mport) or daemon.poll()
        async with FrameSender(tls_broker.url("bed-1"), mqtt=MqttSecurity(pki.security().tls, BED_PW)) as tx:
            for payload in frames("bed-1", 15):
                await tx.send("bed-1", payload)
        # bed-1 falls silent: NO_SIGNAL goes to the journal and, over TLS, to the viewer.
        assert await wait_for(lambda: journal.exists() and "bed-1" in journal.read_text(), 15.0)
        viewer_out, viewer_err = await asyncio.to_thread(viewer.communicate, timeout=15)
        assert viewer.returncode == 0 and "bed-1" in viewer_out, viewer_err
        metrics = _scrape(mport)
        daemon.send_signal(signal.SIGINT)
        out, err = await asyncio.to_thread(daemon.communicate, timeout=20)
        assert daemon.returncode == 0, err
    finally:
        for p in (daemon, viewer):
            if p.poll() is None:
                p.kill()
                p.wait(10)
    # The warning and the redacted start-up line are there; the password is not.
    assert "the password is written in the URL" in err
    assert f"monitor up: ingest mqtts://ecg-monitor:***@127.0.0.1:{tls_broker.port}" in err
    assert " DEBUG " in err  # everything was logged (aiomqtt/paho keep their own logger at WARNING)

    # Errors: a bad URL on the command line, a bad config value, a config repr.
    from app.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["run", "--ingest", f"mqtt://alice:{MONITOR_PW}@127.0.0.1:bad"])
    assert exit_.value.code == 2
    cli_err = capsys.readouterr().err
    assert "bad port" in cli_err
    try:
        MonitorConfig(alarms=(f"mqtts://alice:{MONITOR_PW}@broker:x",))
        raise AssertionError("a bad port was accepted")
    except ConfigError as exc:
        config_err = str(exc)
    cfg_repr = repr(MonitorConfig(ingest=(tls_broker.url("ecg-monitor", MONITOR_PW),), mqtt_password=VIEWER_PW))
    assert "ecg-monitor:***@" in cfg_repr

    # the journal, its state and dead-letter files, and the strips kept beside it
    leftovers = [f.read_text() for f in tmp_path.glob("alarms.jsonl*") if f.is_file()]
    leftovers += [f.read_text() for f in tmp_path.glob("alarms.jsonl.strips/*") if f.is_file()]
    places = {
        "daemon stderr": err, "daemon stdout": out, "viewer": viewer_out + viewer_err, "metrics": metrics,
        "journal files": "".join(leftovers), "cli error": cli_err, "config error": config_err, "config repr": cfg_repr,
    }  # fmt: skip
    assert journal.read_text() and metrics
    for where, text in places.items():
        for secret in (MONITOR_PW, VIEWER_PW, BED_PW):
            assert secret not in text, f"{secret} leaked into the {where}"
