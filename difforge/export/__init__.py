"""What leaves the Python world: ONNX graphs of model files (:mod:`.onnx`), Hugging Face model
cards (:mod:`.card`), and the reading of a run folder they and the run report share (:mod:`.runinfo`).

Optional packages (onnx, onnxruntime) are imported on use, so ``import difforge.export`` is light.
"""
