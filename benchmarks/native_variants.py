"""The fused kernel per ISA level (native, x86-64-v4, v3, v2): fused vs PyTorch forward+backward
at 1 and 2 threads for both recipes, and the book recipe's training throughput with the kernel
vs LENET_NATIVE=0, measured in one run. The code is lenet.bench.native_variants (also
`lenet bench --native-variants`).

    python benchmarks/native_variants.py [--steps 100] [--rounds 2] [--variants native,x86-64-v3]
"""

import sys

from lenet.bench.native_variants import main

if __name__ == "__main__":
    sys.exit(main())
