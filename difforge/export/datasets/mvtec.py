"""The MVTec AD layout: ``train/good``, ``test/<type>``, ``ground_truth/<type>/<stem>_mask.png``.

MVTec AD is an anomaly-detection layout: models train on defect-free images only. So the good
images of the ``train`` split go to ``train/good``, and every defect image (whatever its split)
and the other good images go to ``test/``; the manifest's ``split`` says which folder each took.
:func:`difforge.data.masks.load_mvtec` reads the result back.
"""

from __future__ import annotations

from .layout import Layout, suffix


class MVTecLayout(Layout):
    name = "mvtec"

    def split_of(self, item, split):
        return "train" if item.good and split == "train" else "test"

    def add(self, item, split, name, mask, instances):
        folder = self.split_of(item, split)
        cls = "good" if item.good else item.class_name
        image = self.copy_image(item, f"{folder}/{cls}/{name}{suffix(item)}")
        out = {"image": image, "mask": None}
        if not item.good:
            out["mask"] = self.write_mask(mask, f"ground_truth/{cls}/{name}_mask.png")
        return out

    def finish(self):
        for d in ("train/good", "test"):  # the loader needs both, even when one is empty
            (self.root / d).mkdir(parents=True, exist_ok=True)
        return []


__all__ = ["MVTecLayout"]
