"""Inception-v3 on a GPU: FP32 against FP16 (channels_last), batch sizes 1-256, plus the FP16 drift.

    python benchmarks/gpu_fp16_bench.py [--batches 1,8,32,64,128,256] [--iters 20]

Needs PyTorch with CUDA (no TensorRT, no Triton): it measures what the network itself costs on the
card, the ceiling any serving stack works under. The model is the served one: uint8 NHWC input,
normalisation folded in, softmax out, with seeded demo weights (the same as `skinbatch convert
--demo-weights`). Drift compares FP16 with FP32 on the same inputs: max |Δp|, max |Δ malignancy| and
top-1 agreement, with malignancy aggregated through the bundled taxonomy.
"""

from __future__ import annotations

import argparse
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,8,32,64,128,256")
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()

    import numpy as np
    import torch

    if not torch.cuda.is_available():
        sys.exit("needs an NVIDIA GPU with CUDA-enabled PyTorch; nothing was measured")

    from skinbatch.converter.checkpoint import demo_weights
    from skinbatch.converter.export import ServedInception
    from skinbatch.taxonomy import default_taxonomy, malignancy_matrix

    tax = default_taxonomy()
    weights = demo_weights(len(tax.training_classes))
    # One module; FP16 through autocast, which keeps softmax in FP32 as the served engine does.
    model = ServedInception(weights.model, "inception").eval().cuda().to(memory_format=torch.channels_last)
    malignant = torch.from_numpy(malignancy_matrix(tax)).cuda()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(f"{'batch':>5} {'fp32 img/s':>11} {'fp16 img/s':>11} {'speed-up':>8} {'max|Δp|':>9} {'max|Δmal|':>9} "
          f"{'top-1 agree':>11}")
    rng = np.random.default_rng(0)
    for batch in (int(b) for b in args.batches.split(",")):
        x = torch.from_numpy(rng.integers(0, 256, (batch, 299, 299, 3), dtype=np.uint8)).cuda()
        rates = []
        outs = []
        for dtype in (torch.float32, torch.float16):
            with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=dtype == torch.float16):
                for _ in range(3):
                    model(x)
                torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(args.iters):
                    y = model(x)
                torch.cuda.synchronize()
                rates.append(batch * args.iters / (time.perf_counter() - start))
                outs.append(y.float())
        p32, p16 = outs
        dp = (p32 - p16).abs().max().item()
        dm = ((p32 - p16) @ malignant).abs().max().item()
        agree = (p32.argmax(1) == p16.argmax(1)).float().mean().item()
        print(f"{batch:5d} {rates[0]:11.1f} {rates[1]:11.1f} {rates[1] / rates[0]:8.2f} {dp:9.2e} {dm:9.2e} "
              f"{agree:11.1%}")


if __name__ == "__main__":
    main()
