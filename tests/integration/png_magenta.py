#!/usr/bin/env python3
"""png_magenta.py PNG [WIDTH HEIGHT]: prints how many pixels of an 8-bit RGB or RGBA
PNG (a chromium screenshot) are magenta (#ff00ff within 15); with WIDTH and HEIGHT,
first fails unless the image has that size. Used by kpi_report.sh and
kpi_report_size.sh to find a marker painted into the page."""
import struct, sys, zlib
data = open(sys.argv[1], "rb").read(); pos, idat = 8, b""
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8]); body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR": w, h, depth, ctype = struct.unpack(">IIBB", body[:10]); bpp = 3 if ctype == 2 else 4
    elif kind == b"IDAT": idat += body
    pos += 12 + n
raw = zlib.decompress(idat); stride = w * bpp; prev = bytearray(stride); hits = 0
for y in range(h):
    f = raw[y * (stride + 1)]; line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - bpp] if i >= bpp else 0; b = prev[i]; c = prev[i - bpp] if i >= bpp else 0
        if f == 1: line[i] = (line[i] + a) & 255
        elif f == 2: line[i] = (line[i] + b) & 255
        elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for i in range(0, stride, bpp):
        if line[i] > 240 and line[i + 1] < 15 and line[i + 2] > 240: hits += 1
    prev = line
if len(sys.argv) == 4:
    assert (w, h) == (int(sys.argv[2]), int(sys.argv[3])), (w, h)
print(hits)
