"""A real XYZ tile server on 127.0.0.1 for tests and gui-smoke: z/x/y PNG tiles cut from a GeoTIFF.

The source is warped once to Web Mercator (EPSG:3857, in GDAL's memory); each request cuts the
tile's window out of it with GDAL (transparent outside the source), as a basemap server would.
No network is needed: QGIS reads it through its own XYZ provider (`type=xyz&url=...`).
"""

from __future__ import annotations

import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

ORIGIN = 20037508.342789244  # half the width of the Web Mercator world, metres
TILE_PX = 256


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """(minx, miny, maxx, maxy) in EPSG:3857 of XYZ tile z/x/y (y counted down from the top)."""
    size = 2 * ORIGIN / (2 ** z)
    minx = -ORIGIN + x * size
    maxy = ORIGIN - y * size
    return minx, maxy - size, minx + size, maxy


class TileSource:
    """The GeoTIFF warped to EPSG:3857 (RGBA, alpha 0 outside it); png(z, x, y) cuts one tile."""

    def __init__(self, path: str):
        from osgeo import gdal

        gdal.UseExceptions()
        self.name = f"/vsimem/xyz-{uuid.uuid4().hex}.tif"
        gdal.Warp(self.name, str(path), dstSRS="EPSG:3857", dstAlpha=True, resampleAlg="bilinear")
        dataset = gdal.Open(self.name)
        x0, dx, _, y0, _, dy = dataset.GetGeoTransform()
        self.bounds = (x0, y0 + dy * dataset.RasterYSize, x0 + dx * dataset.RasterXSize, y0)
        dataset = None
        self._lock = threading.Lock()  # one GDAL cut at a time: /vsimem names are per call anyway

    def png(self, z: int, x: int, y: int) -> bytes:
        from osgeo import gdal

        minx, miny, maxx, maxy = tile_bounds(z, x, y)
        out = f"/vsimem/tile-{uuid.uuid4().hex}.png"
        with self._lock:
            gdal.Warp(out, self.name, format="PNG", outputBounds=(minx, miny, maxx, maxy), width=TILE_PX,
                      height=TILE_PX, resampleAlg="bilinear", dstSRS="EPSG:3857")
            handle = gdal.VSIFOpenL(out, "rb")
            gdal.VSIFSeekL(handle, 0, 2)
            size = gdal.VSIFTellL(handle)
            gdal.VSIFSeekL(handle, 0, 0)
            data = gdal.VSIFReadL(1, size, handle)
            gdal.VSIFCloseL(handle)
            gdal.Unlink(out)
            gdal.Unlink(out + ".aux.xml")
        return bytes(data)

    def close(self) -> None:
        from osgeo import gdal

        gdal.Unlink(self.name)


class XyzServer:
    """`with XyzServer(tif) as server:` serves server.url_template until the block ends; counts requests."""

    def __init__(self, path: str, port: int = 0):
        self.source = TileSource(path)
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                try:
                    body = server.answer(self.path)
                except RuntimeError:  # GDAL: the source was closed (stop() while QGIS still asked)
                    body = None
                if body is None:
                    self.send_error(404)
                    return
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # QGIS dropped a request it no longer needs (the map moved on)

            def log_message(self, *_args):  # quiet: tests and gui-smoke print their own
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="xyz-tiles", daemon=True)

    @property
    def url_template(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{{z}}/{{x}}/{{y}}.png"

    def layer_uri(self, zmax: int = 22) -> str:
        """The data source QGIS's XYZ provider ('wms') takes for this server."""
        from urllib.parse import quote

        return f"type=xyz&url={quote(self.url_template, safe=':/')}&zmax={zmax}&zmin=0"

    def answer(self, path: str) -> Optional[bytes]:
        parts = path.split("?")[0].strip("/").split("/")
        try:
            z, x, y = int(parts[0]), int(parts[1]), int(parts[2].split(".")[0])
        except (IndexError, ValueError):
            return None
        if not (0 <= z <= 24 and 0 <= x < 2 ** z and 0 <= y < 2 ** z):
            return None
        return self.source.png(z, x, y)

    def start(self) -> "XyzServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.thread.is_alive():  # shutdown() waits for serve_forever(): never started, it would hang
            self.httpd.shutdown()
        self.httpd.server_close()
        self.source.close()

    def __enter__(self) -> "XyzServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":  # serve a GeoTIFF by hand: python -m tilescribe.devtools.xyz_tiles R.tif [PORT]
    import sys
    import time

    with XyzServer(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0) as running:
        print(running.layer_uri(), flush=True)
        while True:
            time.sleep(3600)
