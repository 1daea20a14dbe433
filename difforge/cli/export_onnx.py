"""`difforge export-onnx MODEL_FILE OUT.onnx`: the denoising network as an ONNX graph."""

from __future__ import annotations


def add_parser(sub) -> None:
    from ..export.onnx import OPSET

    p = sub.add_parser(
        "export-onnx",
        help="export a model file's network to ONNX (needs difforge[onnx])",
        description="Export the denoising network of MODEL_FILE to ONNX: inputs x (B,C,H,W) float32, t (B,) float32 "
        "and, for a class-conditional model, y (B,) int64 (index = number of classes: the null class); output out. "
        "The batch axis is dynamic; the model file's metadata is stored as ONNX metadata_props. unet, adm, "
        "cspdarkunet and dit export; VAE files do not (a latent model's codec is not a net(x, t) network). "
        "Sample through it with: difforge sample MODEL_FILE --backend onnx --onnx OUT.onnx. "
        "Needs: pip install 'difforge[onnx]'.",
    )
    p.add_argument("model", metavar="MODEL_FILE", help="a .safetensors model file")
    p.add_argument("out", metavar="OUT", help="the .onnx file to write")
    p.add_argument("--check", dest="check", action="store_true", default=None,
                   help="run the export with ONNX Runtime against torch on random inputs (default: on when onnxruntime is installed)")
    p.add_argument("--no-check", dest="check", action="store_false", help="skip the ONNX Runtime check")
    p.add_argument("--check-batch", type=int, default=3, help="random inputs in the check (default 3)")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import UserError
    from ..export.onnx import export_onnx

    if args.check_batch < 1:
        raise UserError(f"--check-batch must be >= 1, got {args.check_batch}")
    r = export_onnx(args.model, args.out, opset=args.opset, check=args.check, check_batch=args.check_batch)
    print(f"wrote {r.path} ({r.size_bytes / 1e6:.1f} MB, inputs {', '.join(r.inputs)}; output (batch, {', '.join(map(str, r.output_shape[1:]))}); "
          f"opset {args.opset}, {r.seconds:.1f} s)")
    if r.max_abs_diff is not None:
        print(f"check: max |onnxruntime - torch| = {r.max_abs_diff:.3g} over {r.check_batch} random inputs")
    return 0
