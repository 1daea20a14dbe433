"""ImageFolder: ``<split>/<class>/<name>.png`` (``good`` a class like the others) for classifiers.

Masks, when the source has them, go beside in ``masks/<split>/<class>/<name>.png`` (outside the
split folders, so a classifier's loader pointed at ``<split>/`` does not see them as a class).
"""

from __future__ import annotations

from .layout import Layout, suffix


class ImageFolderLayout(Layout):
    name = "imagefolder"
    needs_masks = False

    def add(self, item, split, name, mask, instances):
        cls = item.class_name
        out = {"image": self.copy_image(item, f"{split}/{cls}/{name}{suffix(item)}"), "mask": None}
        if item.mask is not None and not item.good:
            out["mask"] = self.write_mask(mask, f"masks/{split}/{cls}/{name}.png")
        return out


__all__ = ["ImageFolderLayout"]
