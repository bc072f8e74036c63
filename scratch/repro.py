"""Local repro: host Litestream -> rclone sftp; writer commits every 0.1s; restore every 0.3s; log failures."""
import sqlite3, subprocess, sys, threading, time, json, os
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from backup import replica, replicaserver, replication
from provisioning.spec import GUESTFWD_ADDRESS, GUESTFWD_PORT

work = Path(sys.argv[1]); duration = float(sys.argv[2]); extra = sys.argv[3] if len(sys.argv) > 3 else ""
work.mkdir(parents=True, exist_ok=True)
server = replicaserver.server(replica.replica_site(work / "state", "secondary"), 24500)
replicaserver.start(server)
db = work / "tenant.db"
with sqlite3.connect(db) as c:
    c.execute("PRAGMA journal_mode=WAL"); c.execute("CREATE TABLE IF NOT EXISTS certification (id INTEGER PRIMARY KEY, purpose TEXT)")
cfg = replica.litestream_config(database=str(db), tenant="taipei", site=server.site, host_key_line=replicaserver.host_key_line(server.site))
cfg = cfg.replace(f"{GUESTFWD_ADDRESS}:{GUESTFWD_PORT}", f"127.0.0.1:{int(os.environ.get('VIA', server.port))}").replace(replica.GUEST_KEY, str(server.site.client_key))
cfg = cfg.replace("logging:\n  level: info\n", "logging:\n  level: debug\n") + extra
(work / "ls.yml").write_text(cfg)
ls = subprocess.Popen([str(replication.litestream_binary()), "replicate", "-config", str(work / "ls.yml")], stdout=open(work / "ls.log", "w"), stderr=subprocess.STDOUT)
stop = threading.Event()
def writer():
    n = 0
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA synchronous=FULL")
        while not stop.is_set():
            c.execute("INSERT INTO certification (purpose) VALUES (?)", (f"p{n}",)); c.commit(); n += 1
            time.sleep(0.1)
t = threading.Thread(target=writer); t.start()
folder = server.site.county_dir("taipei") / "ltx"
def listing():
    out = []
    for p in sorted(folder.glob("*/*")):
        try: out.append(f"{p.parent.name}/{p.name}:{p.stat().st_size}")
        except OSError: out.append(f"{p.parent.name}/{p.name}:GONE")
    return out
end = time.monotonic() + duration; ok = fail = 0
log = open(work / "fails.log", "w")
i = 0
while time.monotonic() < end:
    i += 1
    before = listing()
    target = work / "r" / f"{i}.db"
    target.parent.mkdir(exist_ok=True)
    t0 = time.time()
    done = subprocess.run([str(replication.litestream_binary()), "restore", "-o", str(target), f"file://{folder.parent}"], capture_output=True, text=True)
    after = listing()
    if done.returncode != 0:
        fail += 1
        log.write(json.dumps({"t": time.strftime('%H:%M:%S', time.gmtime(t0)) + f".{int(t0*1000)%1000:03d}", "err": done.stderr.strip()[-300:], "before": before, "after": after}) + "\n"); log.flush()
    else:
        ok += 1
    for f in target.parent.glob("*"): f.unlink()
    time.sleep(float(os.environ.get("POLL", "0.3")))
stop.set(); t.join(); ls.terminate(); ls.wait()
replicaserver.stop(server)
print(json.dumps({"ok": ok, "fail": fail}))
