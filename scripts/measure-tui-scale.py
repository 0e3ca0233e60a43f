#!/usr/bin/env python3
"""The cockpit scale test (issue 10): three real `signalbox gateway` processes, each with
1,000 services (upstreams) and 500 routes, and the real cockpit in tmux against them.

  scripts/measure-tui-scale.py BIN [PORT_BASE] [COLSxROWS] [CHANGES] [no-metrics]

`no-metrics` points every environment's metrics source at a closed port, to tell the cost of
the live metrics (scraping and keeping three gateways' metrics) from the rest.

Measures, on the real binary:
  - time from spawn to the first frame that shows data (`connected` and the first route),
    read by polling `tmux capture-pane` every 10 ms;
  - RSS (and its peak) once all three environments are loaded, and idle CPU over 20 s;
  - snapshot → screen: CHANGES times, set route-000's weights through prod's admin API
    (PUT /admin/routes/route-000/split) and time until the routes table on screen shows
    the new canary weight. This is end to end: the admin call, the cockpit's next poll (every 1 s,
    so 0-1,000 ms of waiting is part of it), reading and parsing 500 routes, drawing,
    and tmux. The minimum is the floor of the pipeline without the poll wait.

SETTLE=SECONDS (default 5) waits that long after the first data frame before measuring RSS
and CPU; the sparkline histories fill up after 60 scrapes (2 minutes), so SETTLE=130 gives
the steady state.

Ports used: PORT_BASE .. PORT_BASE+5 (default 25500). Everything it starts is killed by PID
on the way out, also on failure.
"""
import json, os, random, shutil, signal, statistics, subprocess, sys, tempfile, time, urllib.request

SERVICES, ROUTES = 1000, 500

bin_ = os.path.abspath(sys.argv[1])
base = int(sys.argv[2]) if len(sys.argv) > 2 else 25500
cols, rows = map(int, (sys.argv[3] if len(sys.argv) > 3 else "160x48").split("x"))
changes = int(sys.argv[4]) if len(sys.argv) > 4 else 20
no_metrics = len(sys.argv) > 5 and sys.argv[5] == "no-metrics"
clk = os.sysconf("SC_CLK_TCK")
sock = f"sbx-scale-{os.getpid()}"


def gateway_yaml(port, admin, token_file):
    out = [f"listen: 127.0.0.1:{port}",
           f"admin: {{ listen: 127.0.0.1:{admin}, token_file: {token_file} }}", "upstreams:"]
    # Targets are never called (no traffic is sent); port 9 is closed.
    out += [f"  svc-{i:04}: {{ targets: [127.0.0.1:9] }}" for i in range(SERVICES)]
    out.append("routes:")
    for i in range(ROUTES):
        a, b = f"svc-{2 * i:04}", f"svc-{2 * i + 1:04}"
        out.append(f"  - {{ name: route-{i:03}, paths: [/api/r{i}], split: {{ {a}: 90, {b}: 10 }}, canary: {b} }}")
    return "\n".join(out) + "\n"


TOKEN = "scale-test-" + os.urandom(8).hex()
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def get(url, timeout=2):
    with urllib.request.urlopen(urllib.request.Request(url, headers=AUTH), timeout=timeout) as r:
        return r.status, r.read()


def put_split(admin, route, weights):
    req = urllib.request.Request(
        f"http://127.0.0.1:{admin}/admin/routes/{route}/split",
        data=json.dumps({"weights": weights}).encode(),
        method="PUT",
        headers={"Content-Type": "application/json", **AUTH},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200, r.status


def tmux(*args):
    return subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True)


def screen():
    return tmux("capture-pane", "-p", "-t", "scale").stdout


def wait_screen(pred, secs, step=0.01):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        s = screen()
        if pred(s):
            return s, time.monotonic()
        time.sleep(step)
    raise SystemExit(f"timed out after {secs}s; the screen:\n{screen()}")


state = tempfile.mkdtemp(prefix="sbx-scale-")
gateways, cockpit_pid = [], None
try:
    token_file = os.path.join(state, "admin-token")
    with open(os.open(token_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(TOKEN + "\n")
    envs = []
    for n, name in enumerate(["dev", "stage", "prod"]):
        port, admin = base + 2 * n, base + 2 * n + 1
        cfg = os.path.join(state, f"{name}.yaml")
        open(cfg, "w").write(gateway_yaml(port, admin, token_file))
        gateways.append(subprocess.Popen(
            [bin_, "gateway", "--config", cfg, "--state-dir", os.path.join(state, name)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        envs.append((name, admin))
    for name, admin in envs:
        end = time.monotonic() + 30
        while True:
            try:
                if get(f"http://127.0.0.1:{admin}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > end:
                raise SystemExit(f"gateway {name} did not start")
            time.sleep(0.05)
    st = json.loads(get(f"http://127.0.0.1:{envs[2][1]}/admin/state")[1])
    assert len(st["routes"]) == ROUTES and len(st["upstreams"]) == SERVICES, "sizes"

    toml = os.path.join(state, "signalbox.toml")
    with open(toml, "w") as f:
        f.write(f'audit_log = "{state}/audit.jsonl"\n')
        for name, admin in envs:
            f.write(f'\n[[environments]]\nname = "{name}"\nadmin_url = "http://127.0.0.1:{admin}"\n'
                    f'token_file = "{token_file}"\nconfirm = "yes"\n')
            if no_metrics:
                # Port 9 is closed: the live panel says so; nothing is scraped or kept.
                f.write('[environments.metrics]\nkind = "scrape"\nurl = "http://127.0.0.1:9/metrics"\n')

    t0 = time.monotonic()
    # exec, so the pane's PID is the cockpit's.
    tmux("new-session", "-d", "-s", "scale", "-x", str(cols), "-y", str(rows),
         f"exec {bin_} --config {toml} --env prod")
    cockpit_pid = int(tmux("display-message", "-p", "-t", "scale", "#{pane_pid}").stdout.strip())
    _, t_first = wait_screen(lambda s: "signalbox " in s, 10)
    _, t_data = wait_screen(lambda s: "connected" in s and "route-000" in s, 30)
    # Every environment polled a few times, metrics scraped; SETTLE=130 waits until the
    # 60-point sparkline histories are full (one point per 2 s scrape).
    time.sleep(float(os.environ.get("SETTLE", "5")))

    def cpu():
        f = open(f"/proc/{cockpit_pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / clk

    c0, w0 = cpu(), time.monotonic()
    time.sleep(20)
    c1, w1 = cpu(), time.monotonic()
    status = dict(l.split(":", 1) for l in open(f"/proc/{cockpit_pid}/status") if ":" in l)

    # Snapshot → screen.
    prod_admin = envs[2][1]
    lat = []
    for k in range(changes):
        canary = 11 + (k * 7) % 80  # never 10 (the starting weight)
        want = f"] {canary:>3}%"  # the canary bar, e.g. `[█░░░░░░░░░]  11%`
        t = time.monotonic()
        put_split(prod_admin, "route-000", {"svc-0000": 100 - canary, "svc-0001": canary})
        _, seen = wait_screen(
            lambda s: any("route-000" in l and want in l for l in s.splitlines()), 10, 0.005)
        lat.append((seen - t) * 1000)
        # A random pause, so the changes land at random points of the 1 s poll period.
        time.sleep(random.uniform(0.2, 1.2))
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
    print(f"environments       3 x {SERVICES} services, {ROUTES} routes"
          + (" (metrics off)" if no_metrics else ""))
    print(f"terminal           {cols}x{rows}")
    print(f"first frame        {(t_first - t0) * 1000:.0f} ms")
    print(f"first data frame   {(t_data - t0) * 1000:.0f} ms")
    print(f"RSS                {status['VmRSS'].strip()} (peak {status['VmHWM'].strip()})")
    print(f"idle CPU           {(c1 - c0) / (w1 - w0) * 100:.1f}% of one core over {w1 - w0:.0f} s")
    print(f"snapshot → screen  n={len(lat)} mean {statistics.mean(lat):.0f} ms, min {lat[0]:.0f} ms, median {statistics.median(lat):.0f} ms, "
          f"p90 {q(0.9):.0f} ms, max {lat[-1]:.0f} ms (includes the 1 s poll wait)")
finally:
    if cockpit_pid:
        try:
            os.kill(cockpit_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    tmux("kill-server")
    for g in gateways:
        g.kill()
        g.wait()
    shutil.rmtree(state, ignore_errors=True)
