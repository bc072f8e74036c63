"""TCP proxy 127.0.0.1:LISTEN -> 127.0.0.1:TARGET, each chunk (<= CHUNK bytes) delayed DELAY s."""
import socket, sys, threading, time
listen, target, chunk, delay = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
def pump(a, b):
    try:
        while True:
            data = a.recv(chunk)
            if not data: break
            time.sleep(delay)
            b.sendall(data)
    except OSError: pass
    finally:
        for s in (a, b):
            try: s.shutdown(socket.SHUT_RDWR)
            except OSError: pass
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind(("127.0.0.1", listen)); srv.listen()
while True:
    c, _ = srv.accept(); u = socket.create_connection(("127.0.0.1", target))
    threading.Thread(target=pump, args=(c, u), daemon=True).start(); threading.Thread(target=pump, args=(u, c), daemon=True).start()
