"""Datasets a defect detector reads: MVTec AD, YOLO (detection and segmentation), COCO, ImageFolder.

    from difforge.export.datasets import export_dataset
    export_dataset("synth_out", "yolo", "yolo_data", split="train=0.8,val=0.2", real="real_defects")

:mod:`.items` reads a source (a ``manifest.jsonl`` folder, a masks layout, an image folder),
:mod:`.geometry` turns masks into instances, boxes, polygons and RLE, :mod:`.split` assigns
train / val / test, one module per format (:mod:`.mvtec`, :mod:`.yolo`, :mod:`.coco`,
:mod:`.imagefolder`) places files, :mod:`.run` checks, writes into a temporary folder and renames
it into place. scikit-image and pycocotools are the ``[export]`` extra, imported on use.
"""

from .run import FORMATS, Exported, export_dataset

__all__ = ["Exported", "FORMATS", "export_dataset"]
