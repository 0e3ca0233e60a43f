#!/usr/bin/env python3
"""Measures the real cockpit in a pseudo-terminal against a running sandbox:
time to first frame, time to the first frame with data, RSS, idle CPU and the bytes
written to the terminal per minute while nobody touches a key.

  scripts/measure-tui.py BIN [PORT_BASE] [COLSxROWS] [IDLE_SECONDS]

Starts `BIN sandbox --no-tui` itself (and stops it), then `BIN --config <its file>` on a pty.
"""
import fcntl, os, pty, select, signal, struct, subprocess, sys, tempfile, termios, time

bin_, base = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 24600
cols, rows = map(int, (sys.argv[3] if len(sys.argv) > 3 else "80x24").split("x"))
idle = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
clk = os.sysconf("SC_CLK_TCK")

state = tempfile.mkdtemp(prefix="sbx-measure-")
sandbox = subprocess.Popen([bin_, "sandbox", "--no-tui", "--port-base", str(base), "--state-dir", state],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
child = None
try:
    line = sandbox.stdout.readline()
    assert line.startswith("READY"), line
    config = os.path.join(state, "signalbox.toml")

    t0 = time.monotonic()
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(bin_, [bin_, "--config", config])
    child = pid
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def read_for(secs, until=None):
        buf, end = b"", time.monotonic() + secs
        while time.monotonic() < end:
            r, _, _ = select.select([fd], [], [], 0.05)
            if r:
                try:
                    buf += os.read(fd, 65536)
                except OSError:
                    break
                if until and until in buf:
                    return buf, time.monotonic()
        return buf, None

    out, first = read_for(10, b"signalbox ")
    out2, data = read_for(10, b"connected")
    read_for(5)  # let the first metrics samples arrive

    def cpu():
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / clk

    c0, w0 = cpu(), time.monotonic()
    idle_bytes, _ = read_for(idle)
    c1, w1 = cpu(), time.monotonic()
    status = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status") if ":" in l)
    print(f"terminal           {cols}x{rows}")
    print(f"first frame        {(first - t0) * 1000:.0f} ms")
    print(f"first data frame   {(data - t0) * 1000:.0f} ms" if data else "first data frame   (not seen)")
    print(f"RSS                {status['VmRSS'].strip()} (peak {status['VmHWM'].strip()})")
    print(f"idle CPU           {(c1 - c0) / (w1 - w0) * 100:.2f}% of one core over {w1 - w0:.0f} s")
    print(f"idle output        {len(idle_bytes) / (w1 - w0) * 60 / 1024:.1f} KiB/min ({len(idle_bytes)} bytes in {w1 - w0:.0f} s)")
finally:
    if child:
        os.kill(child, signal.SIGTERM)
        os.waitpid(child, 0)
    sandbox.terminate()
    sandbox.wait()
    subprocess.run(["rm", "-rf", state])
