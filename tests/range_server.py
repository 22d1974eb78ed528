"""A static file server answering HTTP range requests (206), as object stores do for COGs; for the STAC tests.

Run as ``python range_server.py FOLDER LOG``: it prints its port, then appends each Range header to LOG. It
runs in its own process: GDAL holds the GIL while it fetches, so a server thread in the test's own process
would never get to answer.
"""

from __future__ import annotations

import functools
import http.server
import os
import sys


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    log_path = ""

    def send_head(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.remaining = None
            return super().send_head()
        size = os.path.getsize(path)
        handle = open(path, "rb")  # noqa: SIM115 (closed by the base class after copyfile)
        requested = self.headers.get("Range")
        start, end = 0, size - 1
        if requested and requested.startswith("bytes="):
            with open(self.log_path, "a") as log:
                log.write(f"{self.path} {requested}\n")
            first, last = requested[6:].split(",")[0].split("-")
            start, end = (
                (int(first), min(int(last or size - 1), size - 1)) if first else (size - int(last), size - 1)
            )
            handle.seek(start)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.remaining = end - start + 1
        return handle

    def copyfile(self, source, outputfile):
        if self.remaining is None:  # a folder listing or an error page from the base class
            return super().copyfile(source, outputfile)
        outputfile.write(source.read(self.remaining))

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    folder, RangeHandler.log_path = sys.argv[1], sys.argv[2]
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(RangeHandler, directory=folder)
    )
    print(server.server_address[1], flush=True)
    server.serve_forever()
