#!/usr/bin/env python3
"""Helpers of scripts/browser-test.sh (standard library only).

  status_page.py ports N                       print N free loopback ports
  status_page.py paths ORIGIN HOST             print paths worth requesting (posts, home, feed, 404)
  status_page.py traffic ADDR HOST SECS WORKERS PATH...
                                               GET the paths through the proxy for SECS seconds
  status_page.py check DOM_FILE METRICS_FILE   compare the numbers the rendered page shows
                                               with /metrics; exit 1 on a mismatch
"""

import http.client
import json
import socket
import sys
import threading
import time
import urllib.parse
from html.parser import HTMLParser


def ports(n):
    held = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        held.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in held))
    for s in held:
        s.close()


def paths(origin, host):
    u = urllib.parse.urlsplit(origin)
    c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=10)
    c.request("GET", "/wp-json/wp/v2/posts?per_page=20&_fields=link", headers={"Host": host})
    r = c.getresponse()
    body = r.read()
    found = ["/", "/feed/", "/strata-status-no-such-page/"]
    if r.status == 200:
        for post in json.loads(body):
            found.append(urllib.parse.urlsplit(post["link"]).path or "/")
    print("\n".join(found))


def traffic(addr, host, secs, workers, targets):
    h, p = addr.rsplit(":", 1)
    deadline = time.monotonic() + float(secs)
    counts = [0] * int(workers)
    errors = []

    def work(i):
        conn = http.client.HTTPConnection(h, int(p), timeout=10)
        n = i
        while time.monotonic() < deadline:
            path = targets[n % len(targets)]
            headers = {"Host": host}
            if n % 17 == 0:
                # A logged-in visitor: passed to the origin.
                headers["Cookie"] = "wordpress_logged_in_status=1"
            try:
                conn.request("GET", path, headers=headers)
                conn.getresponse().read()
                counts[i] += 1
            except (OSError, http.client.HTTPException) as e:
                errors.append(str(e))
                conn.close()
                conn = http.client.HTTPConnection(h, int(p), timeout=10)
            n += int(workers)
        conn.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(int(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"sent {sum(counts)} requests in {secs} s ({len(errors)} errors)")
    if errors:
        print("first error: " + errors[0], file=sys.stderr)


class Shown(HTMLParser):
    """Every element carrying data-k: its data-v and its text; plus <body>'s and the charts' data."""

    def __init__(self):
        super().__init__()
        self.values = {}
        self.texts = {}
        self.body = {}
        self.charts = {}
        self.current = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if tag == "svg" and a.get("id", "").startswith("chart-"):
            self.charts[a["id"]] = a
        if "data-k" in a:
            self.current = a["data-k"]
            self.values[self.current] = a.get("data-v")
            self.texts[self.current] = ""

    def handle_endtag(self, tag):
        self.current = None

    def handle_data(self, data):
        if self.current is not None:
            self.texts[self.current] += data


def metrics(text):
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            pass
    return out


def check(dom_file, metrics_file):
    page = Shown()
    with open(dom_file, encoding="utf-8") as f:
        page.feed(f.read())
    with open(metrics_file, encoding="utf-8") as f:
        m = metrics(f.read())
    problems = []

    def metric(name):
        if name not in m:
            problems.append(f"{name} missing from /metrics")
            return 0.0
        return m[name]

    def shown(key):
        v = page.values.get(key)
        if v in (None, ""):
            problems.append(f"the page shows no value for {key}")
            return None
        return float(v)

    if page.body.get("data-state") != "live" or int(page.body.get("data-polls", "0")) < 1:
        problems.append(f"the page's script did not load status.json: <body {page.body}>")
    rows = []

    def compare(key, name, tolerance):
        got, want = shown(key), metric(name)
        rows.append((key, got, name, want))
        if got is not None and abs(got - want) > tolerance(want):
            problems.append(f"{key} shows {got}, /metrics {name} = {want}")

    exact = lambda want: 0.0  # noqa: E731
    total = 0.0
    for outcome in ["hit", "stale", "miss", "pass", "synth"]:
        name = f'strata_proxy_requests_total{{outcome="{outcome}"}}'
        compare(f"requests.{outcome}", name, exact)
        total += m.get(name, 0.0)
    m["strata_proxy_requests_total"] = total
    compare("requests.total", "strata_proxy_requests_total", exact)
    compare("hit_ratio", "strata_proxy_hit_ratio", lambda want: 0.001)
    compare("cache.objects", "strata_proxy_cache_objects", lambda want: 1.0)
    compare("cache.bytes", "strata_proxy_cache_bytes", lambda want: max(4096.0, want * 0.01))
    compare("cache.capacity_bytes", "strata_proxy_cache_capacity_bytes", exact)
    compare("origin.requests", "strata_proxy_origin_requests_total", exact)

    # The formatted text agrees with the raw value behind it.
    hits = shown("requests.hit")
    if hits is not None and page.texts.get("requests.hit", "").replace(",", "") != str(int(hits)):
        problems.append(f"requests.hit reads {page.texts.get('requests.hit')!r}, value {hits}")
    ratio = shown("hit_ratio")
    if ratio is not None and page.texts.get("hit_ratio") != f"{ratio * 100:.1f}%":
        problems.append(f"hit_ratio reads {page.texts.get('hit_ratio')!r}, value {ratio}")
    if total > 0 and ratio is not None and not 0.0 < ratio <= 1.0:
        problems.append(f"hit ratio {ratio} after traffic")
    points = int(page.charts.get("chart-rps", {}).get("data-points", "0"))
    if points < 2:
        problems.append(f"the requests/s chart has {points} points")
    if page.values.get("origin.first_byte_p99_ms") in (None, ""):
        problems.append("no origin first-byte p99 shown")

    for key, got, name, want in rows:
        print(f"  {key:<22} page {got!s:>14}   /metrics {name} {want:g}")
    print(f"  page text: {page.texts.get('requests_per_sec')} req/s, p99 {page.texts.get('origin.first_byte_p99_ms')}, "
          f"hit ratio {page.texts.get('hit_ratio')}, cache {page.texts.get('cache.bytes')}, "
          f"chart points {points}")
    for p in problems:
        print("MISMATCH: " + p, file=sys.stderr)
    sys.exit(1 if problems else 0)


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "ports":
        ports(int(args[0]))
    elif cmd == "paths":
        paths(args[0], args[1])
    elif cmd == "traffic":
        traffic(args[0], args[1], args[2], args[3], args[4:])
    elif cmd == "check":
        check(args[0], args[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
