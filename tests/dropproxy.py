"""A TCP proxy that loses answers: in front of the live server, it forwards each request whole,
and for the first ``drops`` connections it waits for the server's first bytes of answer (the
server has acted on the request) and closes the client's connection without passing them on.
What a client sees when a load balancer or a network drops a connection at the worst moment."""

import socket
import threading


class DroppingProxy:
    def __init__(self, upstream_port: int, drops: int = 1):
        self.upstream = ("127.0.0.1", upstream_port)
        self.drops = drops
        self.dropped = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def start(self) -> "DroppingProxy":
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # stopped
            with self._lock:
                self.connections += 1
                drop = self.dropped < self.drops
                if drop:
                    self.dropped += 1
            threading.Thread(target=self._serve, args=(client, drop), daemon=True).start()

    def _serve(self, client: socket.socket, drop: bool) -> None:
        upstream = socket.create_connection(self.upstream)
        threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
        if drop:
            upstream.settimeout(120)
            try:
                upstream.recv(1)  # the server answers: the request was taken and acted on
            finally:
                _close(client)
                _close(upstream)
            return
        _pipe(upstream, client)


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        _close(target)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
