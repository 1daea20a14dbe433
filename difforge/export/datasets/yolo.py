"""YOLO detection and segmentation: ``images/<split>/``, ``labels/<split>/`` (one ``.txt`` per image), ``data.yaml``.

A label line per instance (8-connected mask component, :mod:`.geometry`): detection
``class cx cy w h``, segmentation ``class x1 y1 x2 y2 ...`` (the component's outer contour), every
coordinate divided by the image's width or height, so in [0, 1]. A good image gets an empty label
file (a background image, which YOLO trainers use to learn "no defect"). Class ids index
``names`` in ``data.yaml``; the yaml has no ``path`` key, so trainers take the yaml's own folder as
the dataset root and the export can be moved. Masks go to ``masks/<split>/`` for reference.
"""

from __future__ import annotations

import yaml

from .geometry import box, polygon
from .layout import Layout, suffix


def _num(v: float) -> str:
    return f"{min(max(v, 0.0), 1.0):.6f}"


class YoloLayout(Layout):
    name = "yolo"
    segment = False

    def __init__(self, root, classes, options):
        super().__init__(root, classes, options)
        self.used_splits = set()

    def add(self, item, split, name, mask, instances):
        self.used_splits.add(split)
        h, w = mask.shape
        lines = []
        for comp in instances:
            k = self.ids[item.class_name]
            if self.segment:
                pts = polygon(comp)
                coords = " ".join(f"{_num(x / w)} {_num(y / h)}" for x, y in pts)
                lines.append(f"{k} {coords}")
            else:
                x0, y0, x1, y1 = box(comp)
                lines.append(f"{k} {_num((x0 + x1) / 2 / w)} {_num((y0 + y1) / 2 / h)} {_num((x1 - x0) / w)} {_num((y1 - y0) / h)}")
        out = {"image": self.copy_image(item, f"images/{split}/{name}{suffix(item)}")}
        out["label"] = self.write_text("".join(line + "\n" for line in lines), f"labels/{split}/{name}.txt")
        out["mask"] = None if item.good else self.write_mask(mask, f"masks/{split}/{name}.png")
        return out

    def finish(self):
        splits = [s for s in ("train", "val", "test") if s in self.used_splits]
        doc = {s: f"images/{s}" for s in splits}
        if "val" not in doc:  # trainers require a val entry: the closest split there is
            doc["val"] = doc.get("test", doc.get("train"))
        doc["nc"] = len(self.classes)
        doc["names"] = {i: c for i, c in enumerate(self.classes)}
        head = (f"# difforge export, YOLO {'segmentation' if self.segment else 'detection'}; "
                "no 'path' key: the dataset root is this file's folder\n")
        return [self.write_text(head + yaml.safe_dump(doc, sort_keys=False), "data.yaml")]


class YoloSegLayout(YoloLayout):
    name = "yolo-seg"
    segment = True


__all__ = ["YoloLayout", "YoloSegLayout"]
