"""Run a module as ``__main__`` with Python networking refused: ``python tests/no_network.py LOG -m MODULE ARGS``.

An audit hook refuses every socket connection, bind, name lookup and URL open, and appends each attempt to
LOG, so a test can assert that nothing was even tried (a refused attempt might be swallowed by a library).
"""

import runpy
import sys

BLOCKED = (
    "socket.connect",
    "socket.bind",
    "socket.getaddrinfo",
    "socket.gethostbyname",
    "socket.gethostbyaddr",
    "socket.sendto",
    "socket.sendmsg",
    "urllib.Request",
    "http.client.connect",
    "ftplib.connect",
    "smtplib.connect",
)


def main() -> None:
    log_path, flag, module, *args = sys.argv[1:]
    assert flag == "-m", "usage: no_network.py LOG -m MODULE ARGS..."

    def guard(event, details):
        if event in BLOCKED:
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(f"{event} {details!r}\n")
            raise OSError(f"network access refused by the test's socket guard: {event} {details!r}")

    sys.addaudithook(guard)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
