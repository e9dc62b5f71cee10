#!/usr/bin/env python3
"""Puts images side by side with a caption under each (for the README).

    scripts/side-by-side.py OUT.png "caption=IMAGE" "caption=IMAGE" ...

Needs Pillow. Images are shown at their size, 8 px apart, on white.
"""
import sys

from PIL import Image, ImageDraw


def main(out, panels):
    pairs = [p.split("=", 1) for p in panels]
    images = [(caption, Image.open(path).convert("RGB")) for caption, path in pairs]
    gap, caption_height = 8, 20
    width = sum(im.width for _, im in images) + gap * (len(images) + 1)
    height = max(im.height for _, im in images) + caption_height + 2 * gap
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    x = gap
    for caption, im in images:
        sheet.paste(im, (x, gap))
        draw.text((x, gap + im.height + 4), caption, fill="black")
        x += im.width + gap
    sheet.save(out)


if __name__ == "__main__":
    if len(sys.argv) < 3 or any("=" not in a for a in sys.argv[2:]):
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
