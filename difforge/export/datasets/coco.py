"""COCO instances JSON: ``images/<split>/``, ``annotations/instances_<split>.json``.

One annotation per instance (8-connected mask component, :mod:`.geometry`): ``bbox`` [x, y, w, h]
in pixels, ``area`` its pixel count, ``iscrowd`` 0, ``segmentation`` its outer contour as a polygon
(``--segmentation polygon``, read by every COCO tool) or its exact mask as compressed RLE
(``--segmentation rle``, holes kept; pycocotools, detectron2 and mmdetection read it). Categories
are the class names, ids from 1; a good image is listed with no annotation. ``file_name`` is
relative to ``images/<split>/``. Masks go to ``masks/<split>/`` for reference.
"""

from __future__ import annotations

import json

from ...data.manifest import utc_now
from .geometry import box, need, polygon, rle
from .layout import Layout, suffix

SEGMENTATIONS = ("polygon", "rle")


class CocoLayout(Layout):
    name = "coco"

    def __init__(self, root, classes, options):
        super().__init__(root, classes, options)
        self.segmentation = options.get("segmentation", "polygon")
        need("pycocotools.mask" if self.segmentation == "rle" else "skimage.measure", f"--format coco --segmentation {self.segmentation}")
        self.docs = {}

    def _doc(self, split):
        if split not in self.docs:
            self.docs[split] = {
                "info": {"description": f"difforge export ({split})", "date_created": utc_now()},
                "licenses": [], "images": [], "annotations": [],
                "categories": [{"id": i + 1, "name": c, "supercategory": "defect"} for i, c in enumerate(self.classes)],
            }
        return self.docs[split]

    def add(self, item, split, name, mask, instances):
        doc = self._doc(split)
        h, w = mask.shape
        file_name = f"{name}{suffix(item)}"
        image_id = len(doc["images"]) + 1
        doc["images"].append({"id": image_id, "file_name": file_name, "width": int(w), "height": int(h)})
        for comp in instances:
            x0, y0, x1, y1 = box(comp)
            seg = rle(comp) if self.segmentation == "rle" else [[round(float(v), 3) for v in polygon(comp).ravel()]]
            doc["annotations"].append({
                "id": len(doc["annotations"]) + 1, "image_id": image_id, "category_id": self.ids[item.class_name] + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": int(comp.sum()), "iscrowd": 0, "segmentation": seg,
            })
        out = {"image": self.copy_image(item, f"images/{split}/{file_name}"), "label": f"annotations/instances_{split}.json"}
        out["mask"] = None if item.good else self.write_mask(mask, f"masks/{split}/{name}.png")
        return out

    def finish(self):
        return [self.write_text(json.dumps(doc), f"annotations/instances_{split}.json") for split, doc in self.docs.items()]


__all__ = ["CocoLayout", "SEGMENTATIONS"]
