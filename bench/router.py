"""Router benchmark: one upstream reached directly, through HAProxy, and through the router.

``python -m bench.router [--duration S] [--connections 1,8,64] [--rounds N]
[--set all|plain|tls] [--echo]`` (not a test; prints a table).

Upstreams: the real inference server on samples/diabetes (``python -m scoring serve``, one
worker each) when it and the trained model exist, else ``tests/assets/echo_upstream.py`` (a
raw ASGI app on uvicorn); the table says which. Two instances, blue and green, take an 80/20
split. HAProxy (Debian's package) gets the same key check and split, twice: with its default
threads (one per core: the anchor for the ratios) and with ``nbthread 1`` (the same single
thread the router runs on); the router runs with ``auth_mode: key``. A last row runs the
router with 50% of requests mirrored: to a third instance on the same cores
(``router+mirror50``), and to a near-free static responder standing in for a candidate whose
CPU is elsewhere, as in a cluster (``router+mirror50ext``). The proxy CPU column is the
proxy process's user+system CPU per request (less sensitive to a busy machine than req/s).
HTTPS rows (``--set tls``, or ``all``): the router with ``tls`` against HAProxy terminating
TLS with the same certificate, key check and split, reusing connections and with a new
connection (``Connection: close``) per request. Load: wrk from Debian, on the same 2 cores;
the load average is printed with the table because other work on the machine moves every
figure.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._load import Result, loadavg, wrk
from mlendpoints._procs import free_port, running, serve_args, stop
from mlendpoints.paths import REPO, SAMPLE

KEY1, KEY2 = "bench-primary-key", "bench-secondary-key"


def _body() -> str:
    req = SAMPLE / "sample-request.json"
    if req.exists():
        return req.read_text().strip()
    return json.dumps({"data": [[0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, 0.0, 0.02, -0.01]]})


def _real_server_ready() -> bool:
    return (
        (REPO / "scoring" / "server" / "supervisor.py").exists()
        and (SAMPLE / "score.py").exists()
        and any((SAMPLE / "model").glob("*.pkl"))
    )


def _proc(
    argv: list[str], ready_url: str, log: Path, env: dict[str, str] | None = None
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    return running(argv, ready_url, log, env=env, new_session=True)


def _upstream(name: str, tmp: Path, real: bool) -> contextlib.AbstractContextManager:
    port = free_port()
    if real:
        argv = [
            sys.executable,
            *serve_args(
                SAMPLE / "score.py",
                SAMPLE / "model",
                *("--workers", "1", "--max-concurrent-requests-per-instance", "0"),
                port=port,
            ),
        ]
        ready = f"http://127.0.0.1:{port}/ready"
    else:
        argv = [
            sys.executable,
            "tests/assets/echo_upstream.py",
            "--name",
            name,
            "--port",
            str(port),
        ]
        ready = f"http://127.0.0.1:{port}/"
    return _proc(argv, ready, tmp / f"{name}.log"), port


def haproxy_cfg(port: int, blue: int, green: int, threads: int | None) -> str:
    nbthread = f"    nbthread {threads}\n" if threads else ""
    return f"""global
    maxconn 4096
{nbthread}defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 5s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:{port}
    acl key_ok req.hdr(authorization) -m str "Bearer {KEY1}" "Bearer {KEY2}"
    http-request deny deny_status 401 unless key_ok
    default_backend deployments
backend deployments
    balance random
    server blue 127.0.0.1:{blue} weight 80
    server green 127.0.0.1:{green} weight 20
"""


def haproxy_tls_cfg(port: int, blue: int, green: int, pem: Path) -> str:
    """HAProxy terminating TLS (1.2+) with the same certificate, key check and split."""
    plain = haproxy_cfg(port, blue, green, None)
    return plain.replace(
        f"    bind 127.0.0.1:{port}\n",
        f"    bind 127.0.0.1:{port} ssl crt {pem} ssl-min-ver TLSv1.2\n",
    )


def static_cfg(port: int) -> str:
    """A near-free HTTP responder: stands in for a mirror candidate running on other nodes."""
    return f"""global
    maxconn 4096
    nbthread 1
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 5s
frontend fe
    bind 127.0.0.1:{port}
    http-request return status 200 content-type application/json string "[1, 0]"
"""


def router_cfg(
    blue: int, green: int, shadow: int | None, tls: dict[str, str] | None = None
) -> dict[str, object]:
    deps = {
        "blue": {"url": f"http://127.0.0.1:{blue}"},
        "green": {"url": f"http://127.0.0.1:{green}"},
    }
    mirror: dict[str, int] = {}
    if shadow is not None:
        deps["shadow"] = {"url": f"http://127.0.0.1:{shadow}"}
        mirror = {"shadow": 50}
    return {
        "endpoint_name": "bench",
        "auth_mode": "key",
        "deployments": deps,
        "traffic": {"blue": 80, "green": 20},
        "mirror_traffic": mirror,
        "request_timeout_ms": 10000,
        **({"tls": tls, "metrics_port": free_port()} if tls else {}),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.router")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    p.add_argument("--connections", default="1,8,64")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians shown")
    p.add_argument(
        "--set",
        choices=("all", "plain", "tls"),
        default="all",
        help="plain: HTTP rows (direct, HAProxy, router, mirrors); tls: direct and the HTTPS "
        "rows (router vs HAProxy terminating TLS, reused and new connections); all: both",
    )
    p.add_argument(
        "--echo",
        action="store_true",
        help="use the echo upstream even if the real inference server is available",
    )
    args = p.parse_args(argv)
    for tool in ("wrk", "haproxy"):
        if not shutil.which(tool):
            print(f"{tool} not found: apt-get install -y wrk haproxy", file=sys.stderr)
            return 2
    conns = [int(c) for c in args.connections.split(",")]
    real = _real_server_ready() and not args.echo
    tmp = Path(tempfile.mkdtemp(prefix="bench-router-"))
    body = tmp / "body.json"
    body.write_text(_body())
    auth = {"Authorization": f"Bearer {KEY1}"}
    env = {"ML_ENDPOINTS_PRIMARY_KEY": KEY1, "ML_ENDPOINTS_SECONDARY_KEY": KEY2}
    load_before = loadavg()
    rows: list[tuple[str, int, dict[str, float]]] = []
    with contextlib.ExitStack() as stack:
        ups = {}
        for name in ("blue", "green", "shadow"):
            cm, port = _upstream(name, tmp, real)
            stack.enter_context(cm)
            ups[name] = port
        hport, h1port, static, tport = free_port(), free_port(), free_port(), free_port()
        tls = _certificates(tmp)
        plain, tls_rows = args.set in ("all", "plain"), args.set in ("all", "tls")
        haproxies = [
            *(
                [
                    ("haproxy", haproxy_cfg(hport, ups["blue"], ups["green"], None)),
                    ("haproxy-1thread", haproxy_cfg(h1port, ups["blue"], ups["green"], 1)),
                    ("static", static_cfg(static)),
                ]
                if plain
                else []
            ),
            *(
                [("haproxy-tls", haproxy_tls_cfg(tport, ups["blue"], ups["green"], tls["pem"]))]
                if tls_rows
                else []
            ),
        ]
        pids: dict[str, int] = {}
        for label, text in haproxies:
            cfg = tmp / f"{label}.cfg"
            cfg.write_text(text)
            hap = subprocess.Popen(
                ["haproxy", "-f", str(cfg)],
                stdout=subprocess.DEVNULL,
                stderr=(tmp / f"{label}.log").open("wb"),
                start_new_session=True,
            )
            stack.callback(stop, hap)
            pids[label] = hap.pid
        routers: dict[str, int | None] = (
            {"router": None, "router+mirror50": ups["shadow"], "router+mirror50ext": static}
            if plain
            else {}
        )
        if tls_rows:
            routers["router-tls"] = None
        ports: dict[str, int] = {}
        for label, shadow in routers.items():
            port = ports[label] = free_port()
            cfg_path = tmp / f"{label}.json"
            rcfg = router_cfg(
                ups["blue"], ups["green"], shadow, tls["files"] if label == "router-tls" else None
            )
            cfg_path.write_text(json.dumps(rcfg))
            ready = (
                f"http://127.0.0.1:{rcfg['metrics_port']}/metrics"
                if "metrics_port" in rcfg
                else f"http://127.0.0.1:{port}/ready"
            )
            rp = stack.enter_context(
                _proc(
                    [
                        sys.executable,
                        "-m",
                        "scoring",
                        "router",
                        "--config",
                        str(cfg_path),
                        "--port",
                        str(port),
                        "--host",
                        "127.0.0.1",
                    ],
                    ready,
                    tmp / f"{label}.log",
                    env,
                )
            )
            pids[label] = rp.pid
        time.sleep(0.5)
        # (row, pid label, url, headers): TLS rows twice, reusing connections and with a new
        # connection (a full handshake) per request.
        close = {**auth, "Connection": "close"}
        paths: list[tuple[str, str, str, dict[str, str]]] = [
            ("direct", "direct", f"http://127.0.0.1:{ups['blue']}/score", auth)
        ]
        if plain:
            paths += [
                ("haproxy", "haproxy", f"http://127.0.0.1:{hport}/score", auth),
                ("haproxy-1thread", "haproxy-1thread", f"http://127.0.0.1:{h1port}/score", auth),
            ]
            paths += [
                (label, label, f"http://127.0.0.1:{ports[label]}/score", auth)
                for label in routers
                if label != "router-tls"
            ]
        if tls_rows:
            https = {
                "haproxy-tls": f"https://127.0.0.1:{tport}/score",
                "router-tls": f"https://127.0.0.1:{ports['router-tls']}/score",
            }
            paths += [(label, label, url, auth) for label, url in https.items()]
            paths += [(f"{label}/new-conn", label, url, close) for label, url in https.items()]
        for _, _, url, hdrs in paths:  # warm up pools and caches
            wrk(url, body, 8, 1, tmp, headers=hdrs)
        # Rounds interleave the paths so a burst of other work on the machine hits all of
        # them alike; each cell reports its median round.
        runs: dict[tuple[str, int], list[Result]] = {}
        for _ in range(args.rounds):
            for c in conns:
                for name, who, url, hdrs in paths:
                    runs.setdefault((name, c), []).append(
                        wrk(url, body, c, args.duration, tmp, pids.get(who), hdrs)
                    )
        for (name, c), results in runs.items():
            cell = {
                k: statistics.median(getattr(r, field) for r in results)
                for k, field in (
                    ("rps", "rps"),
                    ("p50", "p50_ms"),
                    ("p99", "p99_ms"),
                    ("cpu_us", "cpu_us_per_request"),
                )
            }
            cell["errors"] = sum(r.errors for r in results)  # any error in any round shows
            rows.append((name, c, cell))
        summaries = {
            label: subprocess.run(
                [
                    "curl",
                    "-s",
                    "-H",
                    f"Authorization: Bearer {KEY1}",
                    f"http://127.0.0.1:{ports[label]}/mirror/summary",
                ],
                capture_output=True,
                text=True,
            ).stdout
            for label in list(routers)[1:]
            if "mirror" in label
        }
    upstream = (
        "inference server (python -m scoring serve, samples/diabetes, 1 worker)"
        if real
        else "echo upstream (tests/assets/echo_upstream.py, uvicorn, 1 worker)"
    )
    print(f"router benchmark {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, upstream: {upstream}")
    print(
        f"wrk {args.duration:g}s per cell, median of {args.rounds} interleaved rounds; "
        f"load average before {load_before}, "
        f"after {loadavg()}; HAProxy {_haproxy_version()}; {os.cpu_count()} cores"
    )
    print()
    print(
        "| path               | conns |   req/s | p50 ms | p99 ms | errors | req/s vs haproxy "
        "| p50 added vs direct | proxy CPU µs/req |"
    )
    print(
        "|--------------------|------:|--------:|-------:|-------:|-------:|-----------------:"
        "|--------------------:|-----------------:|"
    )
    by = {(n, c): r for n, c, r in rows}
    for name, c, r in rows:
        # TLS rows compare with HAProxy terminating TLS in the same mode; others with HAProxy.
        anchor = "haproxy" + name.removeprefix("router").removeprefix("haproxy")
        anchor = anchor if name.endswith(("-tls", "/new-conn")) else "haproxy"
        hap = by.get((anchor, c))
        ratio = f"{r['rps'] / hap['rps']:>15.2f}x" if hap else f"{'':>16}"
        added = r["p50"] - by[("direct", c)]["p50"]
        who = name.split("/")[0]
        cpu = f"{r['cpu_us']:.0f}" if who in pids else ""  # direct: no proxy
        print(
            f"| {name:<18} | {c:>5} | {r['rps']:>7.0f} | {r['p50']:>6.3f} | {r['p99']:>6.2f} | "
            f"{int(r['errors']):>6} | {ratio} | {added:>+19.3f} | "
            f"{cpu:>16} |"
        )
    if tls_rows:
        print()
        print(
            "HTTPS, router vs HAProxy terminating TLS (goal: >= 0.8x req/s, <= +0.5 ms p50 at 1):"
        )
        for mode in ("", "/new-conn"):
            for c in conns:
                ours, theirs = by[(f"router-tls{mode}", c)], by[(f"haproxy-tls{mode}", c)]
                print(
                    f"  {'new connection per request' if mode else 'connection reuse':<26} "
                    f"{c:>3} conns: {ours['rps'] / theirs['rps']:.2f}x req/s, "
                    f"p50 {ours['p50'] - theirs['p50']:+.3f} ms"
                )
    print()
    for label in [label for label in list(routers)[1:] if "mirror" in label]:
        where = (
            "a third upstream on the same cores"
            if label == "router+mirror50"
            else "a static responder (candidate's CPU elsewhere)"
        )
        cost = ", ".join(
            f"{c} conns {by[(label, c)]['rps'] / by[('router', c)]['rps'] - 1:+.1%}" for c in conns
        )
        try:
            s = json.loads(summaries[label])["mirrors"]["shadow"]
            detail = (
                f"sent {s['sent']}, equal {s['equal']}, different {s['different']}, "
                f"skipped {s['skipped_overload']}, errors {s['errors']}"
            )
        except (ValueError, KeyError):
            detail = f"summary unavailable: {summaries[label][:200]}"
        print(f"{label} (mirror to {where}): live req/s vs router: {cost}; {detail}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _certificates(tmp: Path) -> dict:
    """A throwaway CA-signed certificate for 127.0.0.1: the router's files and HAProxy's
    bundle (certificate then key, in one PEM)."""
    from components._tls import make_ca, make_server_cert

    ca_cert, ca_key = make_ca("bench CA")
    cert, key = make_server_cert(ca_cert, ca_key, ["localhost"], ["127.0.0.1"])
    (tmp / "tls.crt").write_bytes(cert)
    (tmp / "tls.key").write_bytes(key)
    (tmp / "haproxy.pem").write_bytes(cert + key)
    files = {"cert_file": str(tmp / "tls.crt"), "key_file": str(tmp / "tls.key")}
    return {"files": files, "pem": tmp / "haproxy.pem"}


def _haproxy_version() -> str:
    out = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout
    m = re.search(r"version (\S+)", out)
    return m.group(1) if m else "?"


if __name__ == "__main__":
    sys.exit(main())
