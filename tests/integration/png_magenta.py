#!/usr/bin/python3
"""png_magenta.py [--nonwhite|--both] PNG [WIDTH HEIGHT]: prints how many pixels of a PNG (a
chromium screenshot) are magenta (#ff00ff within 15), or with --nonwhite, how many are
not white (a channel under 240) and the image's pixel count, or with --both, how many are
magenta and how many cyan (#00ffff within 15: a second marker); with WIDTH and HEIGHT,
first fails unless the image has that size. Used by kpi_report.sh and
kpi_report_size.sh to find a marker painted into the page and to tell a blank
screenshot. Decoded by Pillow and counted with numpy (Debian's python3-pil,
python3-numpy: /usr/bin/python3); a pure-Python decoder took seconds of CPU per
screenshot."""
import sys

import numpy as np
from PIL import Image

args = sys.argv[1:]
nonwhite = args[:1] == ["--nonwhite"]
both = args[:1] == ["--both"]
if nonwhite or both:
    args = args[1:]
img = Image.open(args[0])
if len(args) == 3:
    assert img.size == (int(args[1]), int(args[2])), img.size
px = np.asarray(img.convert("RGB"), dtype=np.uint8)   # the alpha channel, if any, is not looked at
r, g, b = px[..., 0], px[..., 1], px[..., 2]
if nonwhite:
    print(int(np.count_nonzero((r < 240) | (g < 240) | (b < 240))), img.size[0] * img.size[1])
elif both:
    print(int(np.count_nonzero((r > 240) & (g < 15) & (b > 240))), int(np.count_nonzero((r < 15) & (g > 240) & (b > 240))))
else:
    print(int(np.count_nonzero((r > 240) & (g < 15) & (b > 240))))
